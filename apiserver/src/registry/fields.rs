//! Field sets: which fields of an object a write sets, as Kubernetes' `FieldsV1` trie,
//! and the decisions of server-side apply and `metadata.managedFields` over them.
//!
//! Pure: no IO, no clock (the caller passes the time). The registry's write path
//! calls [`record`] for every write; the apply verb computes the object it stores with
//! [`merge_apply`].
//!
//! - [`FieldSet`]: a trie of [`PathElement`]s (a map field, a list-map item by its key
//!   values, a set item by its value); a path is a *member* when the set owns it.
//! - [`ListTypes`]: how a kind's lists merge, read from its JSON schema markers
//!   `x-kubernetes-list-type` (`atomic`, `set`, `map`) and
//!   `x-kubernetes-list-map-keys` (lists without a marker are atomic).
//! - [`ManagedEntry`]: one entry of `metadata.managedFields`.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// Metadata fields no manager owns: the server writes them.
const SERVER_METADATA: [&str; 9] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
    "generateName",
];

/// One step of a path through an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of a map (`f:NAME`).
    Field(String),
    /// An item of a list-map by its key values: the JSON text of an object of the
    /// keys, sorted (`k:{"containerPort":80,"protocol":"tcp"}`).
    Key(String),
    /// An item of a set by its value: its JSON text (`v:"container"`).
    Value(String),
}

impl PathElement {
    /// The `FieldsV1` key of this element.
    fn fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(keys) => format!("k:{keys}"),
            PathElement::Value(value) => format!("v:{value}"),
        }
    }

    /// The element a `FieldsV1` key names.
    fn from_fields_v1_key(key: &str) -> Result<PathElement, FieldsError> {
        let bad = || FieldsError(format!("{key:?} is not a FieldsV1 key (f:, k: or v:)"));
        let (prefix, rest) = key.split_at_checked(2).ok_or_else(bad)?;
        let json = |text: &str| {
            serde_json::from_str::<Value>(text)
                .map_err(|e| FieldsError(format!("{key:?}: not JSON after the prefix: {e}")))
        };
        match prefix {
            "f:" => Ok(PathElement::Field(rest.into())),
            "k:" => match json(rest)? {
                Value::Object(keys) => Ok(PathElement::Key(canonical_keys(
                    keys.iter().map(|(k, v)| (k.as_str(), v)),
                ))),
                _ => Err(FieldsError(format!("{key:?}: the keys are not an object"))),
            },
            "v:" => Ok(PathElement::Value(json(rest)?.to_string())),
            _ => Err(bad()),
        }
    }
}

/// A path as kube prints it: `.spec.replicas`, `.spec.template.ports[containerPort=80,protocol="tcp"]`,
/// `.spec.runtimes[="container"]`.
pub fn display(path: &[PathElement]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            PathElement::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            PathElement::Key(keys) => {
                let keys: Map<String, Value> = serde_json::from_str(keys).unwrap_or_default();
                let mut pairs: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                pairs.sort();
                out.push('[');
                out.push_str(&pairs.join(","));
                out.push(']');
            }
            PathElement::Value(value) => {
                out.push_str("[=");
                out.push_str(value);
                out.push(']');
            }
        }
    }
    out
}

/// The JSON text of an object of `keys`, sorted by name.
fn canonical_keys<'a>(keys: impl Iterator<Item = (&'a str, &'a Value)>) -> String {
    let mut keys: Vec<(&str, &Value)> = keys.collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let body: Vec<String> = keys
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// A `FieldsV1` document that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fieldsV1: {0}")]
pub struct FieldsError(String);

/// A set of paths through an object, as a trie: every node says whether its path is a
/// member; the root never is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The fields `object` sets: every leaf value (a scalar, an atomic list, an empty
    /// map), every set item and every list-map item, under `types`. `apiVersion`,
    /// `kind` and the server's metadata (name, namespace, uid, resourceVersion,
    /// generation, timestamps, managedFields) are never in it; nulls are not set.
    pub fn of(object: &Value, types: &ListTypes) -> FieldSet {
        FieldSet::of_in(object, types, Scope::Whole)
    }

    /// [`FieldSet::of`] restricted to `scope` (`scope.restrict(&FieldSet::of(…))`),
    /// without walking the top-level fields outside it: a status write does not walk
    /// the spec, nor a spec write the status.
    pub fn of_in(object: &Value, types: &ListTypes, scope: Scope) -> FieldSet {
        let mut set = FieldSet::default();
        let Some(map) = object.as_object() else {
            return set;
        };
        for (name, value) in map.iter().filter(|(name, _)| scope.covers(name)) {
            let node = types.root.field(name);
            let mut child = FieldSet::default();
            match name.as_str() {
                "apiVersion" | "kind" => continue,
                "metadata" => {
                    let mut meta = value.clone();
                    if let Some(m) = meta.as_object_mut() {
                        SERVER_METADATA.iter().for_each(|f| {
                            m.remove(*f);
                        });
                        if m.is_empty() {
                            continue;
                        }
                    }
                    child.add_value(&meta, node);
                }
                _ => child.add_value(value, node),
            }
            if !child.is_empty() {
                set.children.insert(PathElement::Field(name.clone()), child);
            }
        }
        set
    }

    /// Add what `value` (at this node, of schema `node`) sets.
    fn add_value(&mut self, value: &Value, node: &SchemaNode) {
        match (value, node) {
            (Value::Null, _) => {}
            (Value::Object(map), _) if map.is_empty() => self.member = true,
            (Value::Object(map), _) => {
                for (name, v) in map {
                    let mut child = FieldSet::default();
                    child.add_value(v, node.field(name));
                    if !child.is_empty() {
                        self.children
                            .insert(PathElement::Field(name.clone()), child);
                    }
                }
            }
            (Value::Array(items), SchemaNode::List { kind, items: item }) => match kind {
                ListKind::Atomic => self.member = true,
                ListKind::Set => {
                    for v in items.iter().filter(|v| !v.is_null()) {
                        self.children
                            .entry(PathElement::Value(v.to_string()))
                            .or_default()
                            .member = true;
                    }
                }
                ListKind::Map { .. } => {
                    for v in items {
                        let Some(key) = kind.key_of(v) else { continue };
                        let child = self.children.entry(key).or_default();
                        child.member = true;
                        child.add_value(v, item);
                    }
                }
            },
            _ => self.member = true,
        }
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Add `path` as a member.
    pub fn insert(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether `path` is a member.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        self.at(path).is_some_and(|n| n.member)
    }

    /// Whether `path` or any path under it is a member.
    pub fn contains_at_or_under(&self, path: &[PathElement]) -> bool {
        self.at(path).is_some_and(|n| !n.is_empty())
    }

    fn at(&self, path: &[PathElement]) -> Option<&FieldSet> {
        match path.split_first() {
            None => Some(self),
            Some((first, rest)) => self.children.get(first)?.at(rest),
        }
    }

    /// The members of either.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (k, v) in &other.children {
            let merged = match out.children.get(k) {
                Some(mine) => mine.union(v),
                None => v.clone(),
            };
            out.children.insert(k.clone(), merged);
        }
        out
    }

    /// The members of `self` that are not members of `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let empty = FieldSet::default();
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, v) in &self.children {
            let d = v.difference(other.children.get(k).unwrap_or(&empty));
            if !d.is_empty() {
                out.children.insert(k.clone(), d);
            }
        }
        out
    }

    /// The members of both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, v) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = v.intersection(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// The set with the top-level field `name` only (`only = true`) or without it.
    pub fn scoped(&self, name: &str, only: bool) -> FieldSet {
        let key = PathElement::Field(name.into());
        let mut out = FieldSet::default();
        for (k, v) in &self.children {
            if (*k == key) == only {
                out.children.insert(k.clone(), v.clone());
            }
        }
        out
    }

    /// Every member path, in order.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (k, v) in &self.children {
            prefix.push(k.clone());
            v.collect(prefix, out);
            prefix.pop();
        }
    }

    /// Every member path as kube prints it (`.spec.replicas`).
    pub fn leaf_paths(&self) -> Vec<String> {
        self.paths().iter().map(|p| display(p)).collect()
    }

    /// The member paths that have no member under them (what a value is compared at).
    fn leaves(&self) -> Vec<Vec<PathElement>> {
        self.paths()
            .into_iter()
            .filter(|p| self.at(p).is_some_and(|n| n.children.is_empty()))
            .collect()
    }

    /// The set as kube's `FieldsV1` JSON.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), json!({}));
        }
        for (k, v) in &self.children {
            map.insert(k.fields_v1_key(), v.to_fields_v1());
        }
        Value::Object(map)
    }

    /// The set a `FieldsV1` document describes.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, FieldsError> {
        let mut set = FieldSet::default();
        set.read_fields_v1(value)?;
        set.member = false;
        Ok(set)
    }

    fn read_fields_v1(&mut self, value: &Value) -> Result<(), FieldsError> {
        let map = value
            .as_object()
            .ok_or_else(|| FieldsError(format!("{value} is not an object")))?;
        if map.is_empty() {
            self.member = true;
        }
        for (k, v) in map {
            if k == "." {
                self.member = true;
                continue;
            }
            let mut child = FieldSet::default();
            child.read_fields_v1(v)?;
            self.children
                .insert(PathElement::from_fields_v1_key(k)?, child);
        }
        Ok(())
    }
}

/// How a list merges.
#[derive(Debug, Clone, PartialEq)]
pub enum ListKind {
    /// Replaced as a whole (lists without a marker).
    Atomic,
    /// Scalars merged as a set (`x-kubernetes-list-type: set`).
    Set,
    /// Objects merged by their key fields (`x-kubernetes-list-type: map`); a key an
    /// item lacks has the schema's default.
    Map {
        /// `x-kubernetes-list-map-keys`.
        keys: Vec<String>,
        /// The schema's default of each key that has one.
        defaults: BTreeMap<String, Value>,
    },
}

impl ListKind {
    /// The path element of list-map item `item`.
    fn key_of(&self, item: &Value) -> Option<PathElement> {
        let ListKind::Map { keys, defaults } = self else {
            return None;
        };
        let object = item.as_object()?;
        let mut values = Vec::new();
        for k in keys {
            let v = object
                .get(k)
                .filter(|v| !v.is_null())
                .or_else(|| defaults.get(k))?;
            values.push((k.as_str(), v));
        }
        Some(PathElement::Key(canonical_keys(values.into_iter())))
    }

    /// The element `item` is found by in a list of this kind.
    fn element_of(&self, item: &Value) -> Option<PathElement> {
        match self {
            ListKind::Atomic => None,
            ListKind::Set => Some(PathElement::Value(item.to_string())),
            ListKind::Map { .. } => self.key_of(item),
        }
    }
}

/// The shape of a schema, as far as merging cares.
#[derive(Debug, Clone, PartialEq, Default)]
enum SchemaNode {
    /// An object: its properties, and the schema of other keys.
    Map {
        fields: BTreeMap<String, SchemaNode>,
        values: Option<Box<SchemaNode>>,
    },
    /// A list and its items.
    List {
        kind: ListKind,
        items: Box<SchemaNode>,
    },
    /// A scalar, or anything else.
    #[default]
    Other,
}

static OTHER: SchemaNode = SchemaNode::Other;

impl SchemaNode {
    fn field(&self, name: &str) -> &SchemaNode {
        match self {
            SchemaNode::Map { fields, values } => {
                fields.get(name).or(values.as_deref()).unwrap_or(&OTHER)
            }
            _ => &OTHER,
        }
    }

    fn list_kind(&self) -> Option<&ListKind> {
        match self {
            SchemaNode::List { kind, .. } => Some(kind),
            _ => None,
        }
    }

    fn items(&self) -> &SchemaNode {
        match self {
            SchemaNode::List { items, .. } => items,
            _ => &OTHER,
        }
    }
}

/// For one kind: which lists are list-maps (and their keys), which are sets, the rest
/// atomic, read from its JSON schema.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListTypes {
    root: SchemaNode,
}

impl ListTypes {
    /// Read the markers of `schema` (a JSON schema as schemars emits it: `$ref`s into
    /// `$defs` or `definitions`, `anyOf`/`oneOf`/`allOf` wrappers for options).
    pub fn from_schema(schema: &Value) -> ListTypes {
        ListTypes {
            root: node_of(schema, schema, 0),
        }
    }

    /// The list types of `kind`, read once from its schema.
    pub fn for_kind(kind: &crds::KindInfo) -> &'static ListTypes {
        static TYPES: OnceLock<HashMap<&'static str, ListTypes>> = OnceLock::new();
        let all = TYPES.get_or_init(|| {
            crds::KINDS
                .iter()
                .map(|k| {
                    (
                        k.plural,
                        ListTypes::from_schema(&k.schema().clone().to_value()),
                    )
                })
                .collect()
        });
        static NONE: OnceLock<ListTypes> = OnceLock::new();
        all.get(kind.plural)
            .unwrap_or_else(|| NONE.get_or_init(ListTypes::default))
    }
}

/// The schema `schema` stands for: `$ref`s followed, wrappers of one non-null
/// alternative unwrapped.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if schema.get("items").is_some() || schema.get("properties").is_some() {
            return schema;
        }
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r
                .strip_prefix("#/$defs/")
                .or_else(|| r.strip_prefix("#/definitions/"));
            let def = name.and_then(|n| {
                root.get("$defs")
                    .and_then(|d| d.get(n))
                    .or_else(|| root.get("definitions").and_then(|d| d.get(n)))
            });
            match def {
                Some(def) => {
                    schema = def;
                    continue;
                }
                None => return schema,
            }
        }
        let alternative = ["anyOf", "oneOf", "allOf"].iter().find_map(|w| {
            schema.get(*w).and_then(Value::as_array).and_then(|alts| {
                alts.iter().find(|a| {
                    a.get("$ref").is_some()
                        || a.get("properties").is_some()
                        || a.get("items").is_some()
                })
            })
        });
        match alternative {
            Some(a) => schema = a,
            None => return schema,
        }
    }
    schema
}

fn node_of(root: &Value, schema: &Value, depth: usize) -> SchemaNode {
    if depth > 32 {
        return SchemaNode::Other;
    }
    let marked = schema;
    let schema = resolve(root, schema);
    if let Some(items) = schema.get("items") {
        let items_node = node_of(root, items, depth + 1);
        let marker = |k: &str| marked.get(k).or_else(|| schema.get(k));
        let kind = match marker("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListKind::Set,
            Some("map") => {
                let keys: Vec<String> = marker("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect();
                let item = resolve(root, items);
                let defaults = keys
                    .iter()
                    .filter_map(|k| {
                        let property = item.get("properties")?.get(k)?;
                        let default = property
                            .get("default")
                            .or_else(|| resolve(root, property).get("default"))?;
                        Some((k.clone(), default.clone()))
                    })
                    .collect();
                ListKind::Map { keys, defaults }
            }
            _ => ListKind::Atomic,
        };
        return SchemaNode::List {
            kind,
            items: Box::new(items_node),
        };
    }
    let fields: BTreeMap<String, SchemaNode> = schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), node_of(root, v, depth + 1)))
        .collect();
    let values = schema
        .get("additionalProperties")
        .filter(|v| v.is_object())
        .map(|v| Box::new(node_of(root, v, depth + 1)));
    if fields.is_empty() && values.is_none() {
        SchemaNode::Other
    } else {
        SchemaNode::Map { fields, values }
    }
}

/// The value at `path` in `object` (a list-map item by its keys, a set item by value).
pub fn lookup<'a>(object: &'a Value, path: &[PathElement], types: &ListTypes) -> Option<&'a Value> {
    let mut value = object;
    let mut node = &types.root;
    for element in path {
        match element {
            PathElement::Field(name) => {
                value = value.get(name)?;
                node = node.field(name);
            }
            PathElement::Key(_) | PathElement::Value(_) => {
                let kind = node.list_kind()?;
                value = value
                    .as_array()?
                    .iter()
                    .find(|item| kind.element_of(item).as_ref() == Some(element))?;
                node = node.items();
            }
        }
    }
    Some(value)
}

/// The members of `set` — fields that `after` (of schema `node`) sets — that a write
/// from `before` changed: those `before` lacks, and the leaves it holds with another
/// value. One walk down both objects that skips equal subtrees, a list's items matched
/// through a map by their keys: a path-by-path [`lookup`] scans a list for every item
/// of it, which made a write of an `Endpoints` object with 1,000 entries take seconds.
fn changed(set: &FieldSet, before: Option<&Value>, after: &Value, node: &SchemaNode) -> FieldSet {
    let mut out = FieldSet::default();
    let listed = set
        .children
        .keys()
        .any(|e| !matches!(e, PathElement::Field(_)));
    let (before_items, after_items) = if listed {
        (list_items(before, node), list_items(Some(after), node))
    } else {
        Default::default()
    };
    for (element, child) in &set.children {
        let (was, now, below) = match element {
            PathElement::Field(name) => (
                before.and_then(|v| v.get(name)),
                after.get(name),
                node.field(name),
            ),
            _ => (
                before_items.get(element).copied(),
                after_items.get(element).copied(),
                node.items(),
            ),
        };
        let Some(now) = now else { continue };
        let sub = match was {
            // New here: every member under it is a change.
            None => child.clone(),
            Some(was) if was == now => continue,
            Some(was) => {
                let mut sub = changed(child, Some(was), now, below);
                sub.member = child.member && child.children.is_empty();
                sub
            }
        };
        if !sub.is_empty() {
            out.children.insert(element.clone(), sub);
        }
    }
    out
}

/// The items of `value`, a list of schema `node`, by the element a path names them with.
fn list_items<'a>(value: Option<&'a Value>, node: &SchemaNode) -> HashMap<PathElement, &'a Value> {
    let (Some(kind), Some(list)) = (node.list_kind(), value.and_then(Value::as_array)) else {
        return HashMap::new();
    };
    list.iter()
        .filter_map(|item| Some((kind.element_of(item)?, item)))
        .collect()
}

/// Remove the value at `path` from `object`, if there is one.
fn remove(object: &mut Value, path: &[PathElement], types: &ListTypes) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut node = &types.root;
    let mut value = object;
    let mut item_keys: &[String] = &[];
    for element in parent_path {
        item_keys = &[];
        let next = match element {
            PathElement::Field(name) => {
                node = node.field(name);
                value.get_mut(name)
            }
            PathElement::Key(_) | PathElement::Value(_) => {
                let Some(kind) = node.list_kind() else { return };
                if let ListKind::Map { keys, .. } = kind {
                    item_keys = keys;
                }
                node = node.items();
                value.as_array_mut().and_then(|items| {
                    items
                        .iter_mut()
                        .find(|item| kind.element_of(item).as_ref() == Some(element))
                })
            }
        };
        match next {
            Some(v) => value = v,
            None => return,
        }
    }
    match last {
        // The key fields of a list-map item that stays stay with it.
        PathElement::Field(name) if item_keys.contains(name) => {}
        PathElement::Field(name) => {
            if let Some(map) = value.as_object_mut() {
                map.remove(name);
            }
        }
        PathElement::Key(_) | PathElement::Value(_) => {
            if let (Some(kind), Some(items)) = (node.list_kind(), value.as_array_mut()) {
                items.retain(|item| kind.element_of(item).as_ref() != Some(last));
            }
        }
    }
}

/// `applied` merged into `live` under schema `node`: applied values win, maps merge,
/// list-maps merge by key, sets merge, atomic lists and scalars are replaced.
fn merge(live: &Value, applied: &Value, node: &SchemaNode) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            let mut out = l.clone();
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, v, node.field(k)),
                    None => merge(&Value::Null, v, node.field(k)),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(a)) => match node.list_kind() {
            Some(kind @ (ListKind::Set | ListKind::Map { .. })) => {
                let mut out = l.clone();
                for item in a.iter().filter(|v| !v.is_null()) {
                    let element = kind.element_of(item);
                    match out
                        .iter_mut()
                        .find(|o| element.is_some() && kind.element_of(o) == element)
                    {
                        Some(existing) => *existing = merge(existing, item, node.items()),
                        None => out.push(merge(&Value::Null, item, node.items())),
                    }
                }
                Value::Array(out)
            }
            _ => applied.clone(),
        },
        (_, Value::Object(a)) => Value::Object(
            a.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), merge(&Value::Null, v, node.field(k))))
                .collect(),
        ),
        _ => applied.clone(),
    }
}

/// The object an apply of `applied` to `live` stores: applied values win, maps merge,
/// list-maps merge by key, sets merge, atomic lists are replaced, and the fields the
/// applier owned before (`previously_applied`) and no longer sends are removed, unless
/// another manager owns them (or something under them) in `owned_by_others`.
pub fn merge_apply(
    live: &Value,
    applied: &Value,
    previously_applied: &FieldSet,
    owned_by_others: &FieldSet,
    types: &ListTypes,
) -> Value {
    let mut merged = merge(live, applied, &types.root);
    let keep = FieldSet::of(applied, types).union(owned_by_others);
    for path in previously_applied.difference(&keep).paths() {
        if !keep.contains_at_or_under(&path) {
            remove(&mut merged, &path, types);
        }
    }
    merged
}

/// A field an apply would change that another manager owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    /// The manager that owns the field.
    pub manager: String,
    /// The field, as kube prints it (`.spec.replicas`).
    pub field: String,
    /// The field's path.
    pub path: Vec<PathElement>,
}

/// The conflicts of an apply by `applier` that sets `applied_set` and turns `live`
/// into `next` (the object as it would be stored, defaults filled in): every field of
/// the set whose value changes and that a manager other than the applier's own
/// `Apply` entry owns, by manager then field.
pub fn conflicts(
    live: &Value,
    next: &Value,
    applied_set: &FieldSet,
    applier: &str,
    managers: &[ManagedEntry],
    types: &ListTypes,
) -> Vec<Conflict> {
    let mut out = Vec::new();
    for path in applied_set.leaves() {
        if lookup(live, &path, types) == lookup(next, &path, types) {
            continue;
        }
        for entry in managers {
            let own = entry.manager == applier && entry.operation == Operation::Apply;
            if !own && entry.fields.contains(&path) {
                out.push(Conflict {
                    manager: entry.manager.clone(),
                    field: display(&path),
                    path: path.clone(),
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The manager `kubectl apply --server-side` applies as.
const KUBECTL: &str = "kubectl";

/// The annotation of `kubectl apply` (client-side): the object as last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The fields of `live`'s client-side-apply annotation that still have the value it
/// gave them: kube lets `kubectl` (and only it) take these over by server-side apply
/// without a conflict, so that moving from client-side to server-side apply works.
pub fn unchanged_since_client_side_apply(live: &Value, types: &ListTypes) -> FieldSet {
    let Some(last) = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    else {
        return FieldSet::default();
    };
    let mut unchanged = FieldSet::default();
    for path in FieldSet::of(&last, types).leaves() {
        if lookup(&last, &path, types) == lookup(live, &path, types) {
            unchanged.insert(&path);
        }
    }
    unchanged
}

/// kube's message for `conflicts` (not empty), each manager named `using api_version`.
pub fn conflict_message(conflicts: &[Conflict], api_version: &str) -> String {
    if let [one] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {:?} using {api_version}: {}",
            one.manager, one.field
        );
    }
    let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in conflicts {
        by_manager.entry(&c.manager).or_default().push(&c.field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager:?} using {api_version}:"));
        lines.extend(fields.into_iter().map(|f| format!("- {f}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// The operation of a managedFields entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write.
    Update,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedEntry {
    /// Who wrote (the `fieldManager`).
    pub manager: String,
    /// How.
    pub operation: Operation,
    /// The `apiVersion` the fields are of.
    pub api_version: String,
    /// When the entry last changed (RFC 3339).
    pub time: Option<String>,
    /// `status` for writes of the status subresource, `binding` for bindings.
    pub subresource: Option<String>,
    /// The fields it owns.
    pub fields: FieldSet,
}

impl ManagedEntry {
    /// Read an entry as the API serves it.
    pub fn from_value(value: &Value) -> Result<ManagedEntry, FieldsError> {
        let text = |k: &str| value.get(k).and_then(Value::as_str).map(String::from);
        let operation = match text("operation").as_deref() {
            Some("Apply") => Operation::Apply,
            Some("Update") => Operation::Update,
            other => {
                return Err(FieldsError(format!(
                    "managedFields: operation {other:?} is not one of Apply, Update"
                )))
            }
        };
        match text("fieldsType").as_deref() {
            None | Some("FieldsV1") => {}
            Some(other) => {
                return Err(FieldsError(format!(
                    "managedFields: fieldsType {other:?} is not FieldsV1"
                )))
            }
        }
        Ok(ManagedEntry {
            manager: text("manager").unwrap_or_default(),
            operation,
            api_version: text("apiVersion").unwrap_or_default(),
            time: text("time"),
            subresource: text("subresource").filter(|s| !s.is_empty()),
            fields: match value.get("fieldsV1") {
                Some(f) => FieldSet::from_fields_v1(f)?,
                None => FieldSet::default(),
            },
        })
    }

    /// The entry as the API serves it.
    pub fn to_value(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation.name(),
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_fields_v1(),
        });
        if let Some(t) = &self.time {
            v["time"] = json!(t);
        }
        if let Some(s) = &self.subresource {
            v["subresource"] = json!(s);
        }
        v
    }

    /// Whether this is `writer`'s entry (the same manager, operation and subresource).
    pub fn is_by(&self, writer: &Writer) -> bool {
        self.manager == writer.manager
            && self.operation == writer.operation
            && self.subresource == writer.subresource
    }
}

/// The entries of `metadata.managedFields` of `object` (none when it has none).
pub fn entries_of(object: &Value) -> Result<Vec<ManagedEntry>, FieldsError> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(ManagedEntry::from_value)
        .collect()
}

/// Which part of an object a write's field sets cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (kinds without a status subresource).
    Whole,
    /// Everything but `status` (a main-resource write of a kind with one).
    WithoutStatus,
    /// Only `status` (a write of the status subresource).
    OnlyStatus,
}

impl Scope {
    /// Whether the top-level field `name` is in this scope.
    fn covers(self, name: &str) -> bool {
        match self {
            Scope::Whole => true,
            Scope::WithoutStatus => name != "status",
            Scope::OnlyStatus => name == "status",
        }
    }

    /// `set` restricted to this scope.
    pub fn restrict(self, set: &FieldSet) -> FieldSet {
        let mut out = FieldSet::default();
        for (k, v) in &set.children {
            if matches!(k, PathElement::Field(name) if self.covers(name)) {
                out.children.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

/// Who writes, and how, for [`record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: Operation,
    /// The subresource written (`status`, `binding`), if any.
    pub subresource: Option<String>,
    /// What the write's field sets cover.
    pub scope: Scope,
    /// The `apiVersion` the entries name.
    pub api_version: String,
    /// For an apply: the fields the applied object sets.
    pub applied: Option<FieldSet>,
    /// For an apply: take conflicting fields from their managers instead of failing.
    pub force: bool,
}

/// The managedFields after `writer` turned `before` (none for a create) into `after`,
/// from the `entries` before, at time `now`: the writer's entry owns what it applied
/// (an apply) or what it changed (an update, with what it owned before and still
/// exists); what it changed or removed leaves every other entry; entries left empty go.
/// The writer's entry gets `now` only when its fields change. An apply without `force`
/// that changes a field another manager owns is refused with the conflicts.
pub fn record(
    before: Option<&Value>,
    after: &Value,
    entries: &[ManagedEntry],
    writer: &Writer,
    types: &ListTypes,
    now: &str,
) -> Result<Vec<ManagedEntry>, Vec<Conflict>> {
    let empty = Value::Null;
    let before_object = before.unwrap_or(&empty);
    let before_set = FieldSet::of_in(before_object, types, writer.scope);
    let after_set = FieldSet::of_in(after, types, writer.scope);
    let changed = changed(&after_set, Some(before_object), after, &types.root);
    let removed = before_set.difference(&after_set);
    let applied = writer.applied.as_ref().map(|a| writer.scope.restrict(a));
    if let (Some(applied), false) = (&applied, writer.force) {
        let mut found = conflicts(
            before_object,
            after,
            applied,
            &writer.manager,
            entries,
            types,
        );
        if writer.manager == KUBECTL {
            let allowed = unchanged_since_client_side_apply(before_object, types);
            found.retain(|c| !allowed.contains(&c.path));
        }
        if !found.is_empty() {
            return Err(found);
        }
    }
    let taken = changed.union(&removed);
    let previous = entries.iter().find(|e| e.is_by(writer));
    let mine = match applied {
        Some(applied) => applied,
        None => writer
            .scope
            .restrict(
                &previous
                    .map(|e| e.fields.clone())
                    .unwrap_or_default()
                    .union(&changed),
            )
            .difference(&removed),
    };
    let time = match previous {
        Some(p) if p.fields == mine => p.time.clone(),
        _ => Some(now.to_string()),
    };
    let own = ManagedEntry {
        manager: writer.manager.clone(),
        operation: writer.operation,
        api_version: writer.api_version.clone(),
        time,
        subresource: writer.subresource.clone(),
        fields: mine,
    };
    let mut out = Vec::new();
    let mut placed = false;
    for entry in entries {
        if entry.is_by(writer) {
            placed = true;
            if !own.fields.is_empty() {
                out.push(own.clone());
            }
            continue;
        }
        let mut kept = entry.clone();
        kept.fields = kept.fields.difference(&taken);
        if !kept.fields.is_empty() {
            out.push(kept);
        }
    }
    if !placed && !own.fields.is_empty() {
        out.push(own);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> &'static ListTypes {
        ListTypes::for_kind(crds::kind_by_name("services").unwrap())
    }

    /// The changed fields as the first version of `record` found them: every member
    /// path of `set` looked up in both objects from the root.
    fn changed_by_lookup(
        set: &FieldSet,
        before: &Value,
        after: &Value,
        types: &ListTypes,
    ) -> FieldSet {
        let mut changed = FieldSet::default();
        for path in set.paths() {
            let leaf = set.at(&path).is_some_and(|n| n.children.is_empty());
            let was = lookup(before, &path, types);
            if was.is_none() || (leaf && was != lookup(after, &path, types)) {
                changed.insert(&path);
            }
        }
        changed
    }

    #[test]
    fn changed_fields_are_found_in_one_walk() {
        // Endpoints with their entries as a list map by instance (the served kind's
        // list is atomic): a big list map to walk.
        let mut schema = crds::kind_by_name("endpoints")
            .unwrap()
            .schema()
            .clone()
            .to_value();
        let list = &mut schema["$defs"]["EndpointsSpec"]["properties"]["endpoints"];
        list["x-kubernetes-list-type"] = json!("map");
        list["x-kubernetes-list-map-keys"] = json!(["instance"]);
        let endpoints = &ListTypes::from_schema(&schema);
        let entry = |n: usize, ready: bool| {
            json!({"instance": format!("web-{n}"), "ip": format!("10.0.{}.{}", n / 250, n % 250),
                   "cluster": "c1", "node": format!("n{}", n % 7), "ready": ready})
        };
        let eps = |entries: Vec<Value>| {
            json!({"apiVersion": "oakestra.io/v1", "kind": "Endpoints", "metadata": {"name": "web"},
                   "spec": {"roundRobinIP": "10.30.0.1", "ports": [{"port": 80, "protocol": "TCP"}],
                            "endpoints": entries}})
        };
        let big = |skip: usize, flip: usize, extra: usize| {
            eps((0..300 + extra)
                .filter(|n| *n != skip)
                .map(|n| entry(n, n != flip))
                .collect())
        };
        let cases: Vec<(&str, Value, Value, &ListTypes)> = vec![
            ("nothing before", Value::Null, big(300, 300, 0), endpoints),
            (
                "one entry's field",
                big(300, 300, 0),
                big(300, 5, 0),
                endpoints,
            ),
            (
                "one entry gone, one new",
                big(300, 300, 0),
                big(17, 300, 1),
                endpoints,
            ),
            ("unchanged", big(3, 4, 0), big(3, 4, 0), endpoints),
            (
                "a port's field, a new env var, a label",
                svc(
                    json!({"replicas": 2, "template": {"image": "a", "ports": [{"containerPort": 80}],
                    "env": [{"name": "A", "value": "1"}]}}),
                ),
                {
                    let mut s = svc(json!({"replicas": 3, "template": {"image": "a",
                        "ports": [{"containerPort": 80, "hostPort": 8080}],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}}));
                    s["metadata"]["labels"]["tier"] = json!("front");
                    s
                },
                services(),
            ),
            (
                "a map emptied, an atomic list changed",
                svc(
                    json!({"template": {"image": "a", "command": ["x"], "placement": {"clusters": ["a"]}}}),
                ),
                svc(json!({"template": {"image": "a", "command": ["y"], "placement": {}}})),
                services(),
            ),
        ];
        for (what, before, after, types) in cases {
            let set = FieldSet::of(&after, types);
            let walked = changed(&set, Some(&before), &after, &types.root);
            assert_eq!(
                walked,
                changed_by_lookup(&set, &before, &after, types),
                "{what}"
            );
        }
        // What the walk finds, in a case a reader can check.
        let set = FieldSet::of(&big(300, 5, 0), endpoints);
        let walked = changed(
            &set,
            Some(&big(300, 300, 0)),
            &big(300, 5, 0),
            &endpoints.root,
        );
        assert_eq!(
            walked.leaf_paths(),
            vec![r#".spec.endpoints[instance="web-5"].ready"#]
        );
    }

    #[test]
    fn a_scoped_field_set_is_the_whole_one_restricted() {
        let types = ListTypes::for_kind(crds::kind_by_name("instances").unwrap());
        let instance = json!({"apiVersion": "oakestra.io/v1", "kind": "Instance",
            "metadata": {"name": "web-0", "labels": {"app": "web"}},
            "spec": {"cluster": "c1", "node": "n1", "ordinal": 0,
                     "template": {"image": "a", "env": [{"name": "A", "value": "1"}]}},
            "status": {"phase": "Running", "instanceIP": "10.18.0.5",
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        for scope in [Scope::Whole, Scope::WithoutStatus, Scope::OnlyStatus] {
            let scoped = FieldSet::of_in(&instance, types, scope);
            assert_eq!(
                scoped,
                scope.restrict(&FieldSet::of(&instance, types)),
                "{scope:?}"
            );
            assert!(!scoped.is_empty(), "{scope:?}");
        }
    }

    #[test]
    fn an_endpoints_list_is_one_field() {
        // Its writers replace the list whole: its managed fields name the list, however
        // many entries it has.
        let types = ListTypes::for_kind(crds::kind_by_name("endpoints").unwrap());
        let entries: Vec<Value> = (0..100)
            .map(|n| json!({"instance": format!("web-{n}"), "ip": "10.0.0.1", "cluster": "c1"}))
            .collect();
        let eps = json!({"apiVersion": "oakestra.io/v1", "kind": "Endpoints",
            "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "endpoints": entries}});
        assert_eq!(
            FieldSet::of(&eps, types).leaf_paths(),
            vec![
                ".spec.endpoints",
                r#".spec.ports[port=80,protocol="TCP"]"#,
                r#".spec.ports[port=80,protocol="TCP"].port"#,
                r#".spec.ports[port=80,protocol="TCP"].protocol"#,
            ]
        );
    }

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "oakestra.io/v1", "kind": "Service",
               "metadata": {"name": "web", "uid": "u", "resourceVersion": "3", "labels": {"app": "web"}},
               "spec": spec})
    }

    #[test]
    fn the_schema_markers_are_read() {
        let t = services();
        let template = t.root.field("spec").field("template");
        assert_eq!(
            template.field("ports").list_kind(),
            Some(&ListKind::Map {
                keys: vec!["containerPort".into(), "protocol".into()],
                defaults: [("protocol".to_string(), json!("tcp"))].into(),
            })
        );
        assert!(
            matches!(template.field("env").list_kind(), Some(ListKind::Map { keys, .. }) if keys == &["name"])
        );
        assert_eq!(
            template.field("command").list_kind(),
            Some(&ListKind::Atomic)
        );
        let placement = template.field("placement");
        assert_eq!(
            placement.field("clusters").list_kind(),
            Some(&ListKind::Set)
        );
        let conditions = t.root.field("status").field("conditions");
        assert!(
            matches!(conditions.list_kind(), Some(ListKind::Map { keys, .. }) if keys == &["type"])
        );
        assert_eq!(
            t.root.field("metadata").field("finalizers").list_kind(),
            Some(&ListKind::Set)
        );
        // definitions (schemars 0.8 / OpenAPI v2 style) are followed too.
        let legacy = json!({"properties": {"xs": {"$ref": "#/definitions/Xs"}},
                            "definitions": {"Xs": {"type": "array", "items": {"type": "string"},
                                                   "x-kubernetes-list-type": "set"}}});
        assert_eq!(
            ListTypes::from_schema(&legacy).root.field("xs").list_kind(),
            Some(&ListKind::Set)
        );
    }

    #[test]
    fn the_fields_an_object_sets() {
        for (spec, want) in [
            (
                json!({"replicas": 2}),
                vec![".metadata.labels.app", ".spec.replicas"],
            ),
            (
                json!({"template": {"command": ["a", "b"], "image": "x", "placement": {}}}),
                vec![
                    ".metadata.labels.app",
                    ".spec.template.command",
                    ".spec.template.image",
                    ".spec.template.placement",
                ],
            ),
            (
                json!({"template": {"ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "udp"}]}}),
                vec![
                    ".metadata.labels.app",
                    ".spec.template.ports[containerPort=53,protocol=\"udp\"]",
                    ".spec.template.ports[containerPort=53,protocol=\"udp\"].containerPort",
                    ".spec.template.ports[containerPort=53,protocol=\"udp\"].protocol",
                    ".spec.template.ports[containerPort=80,protocol=\"tcp\"]",
                    ".spec.template.ports[containerPort=80,protocol=\"tcp\"].containerPort",
                ],
            ),
            (
                json!({"template": {"placement": {"clusters": ["b", "a"]}, "image": null}}),
                vec![
                    ".metadata.labels.app",
                    ".spec.template.placement.clusters[=\"a\"]",
                    ".spec.template.placement.clusters[=\"b\"]",
                ],
            ),
        ] {
            assert_eq!(
                FieldSet::of(&svc(spec.clone()), services()).leaf_paths(),
                want,
                "{spec}"
            );
        }
    }

    #[test]
    fn fields_v1_round_trips_in_kubes_shape() {
        let object = svc(json!({"replicas": 2, "template": {"ports": [{"containerPort": 80}]}}));
        let set = FieldSet::of(&object, services());
        let v1 = set.to_fields_v1();
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:replicas": {}, "f:template": {"f:ports": {
                       "k:{\"containerPort\":80,\"protocol\":\"tcp\"}": {".": {}, "f:containerPort": {}}}}}})
        );
        assert_eq!(FieldSet::from_fields_v1(&v1).unwrap(), set);
        // Keys in any order read as the same element.
        let reordered = json!({"f:spec": {"f:template": {"f:ports": {"k:{\"protocol\":\"tcp\",\"containerPort\":80}": {}}}}});
        let read = FieldSet::from_fields_v1(&reordered).unwrap();
        assert!(set.contains_at_or_under(&read.paths()[0]));
        for bad in [json!({"x:a": {}}), json!({"k:notjson": {}}), json!([])] {
            assert!(FieldSet::from_fields_v1(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_algebra() {
        let a = FieldSet::of(
            &svc(json!({"replicas": 1, "template": {"image": "x"}})),
            services(),
        );
        let b = FieldSet::of(&json!({"spec": {"replicas": 3}}), services());
        assert_eq!(a.intersection(&b).leaf_paths(), vec![".spec.replicas"]);
        assert_eq!(
            a.difference(&b).leaf_paths(),
            vec![".metadata.labels.app", ".spec.template.image"]
        );
        assert_eq!(a.union(&b), a);
        assert!(b.difference(&a).is_empty());
        assert!(!a.is_empty() && FieldSet::default().is_empty());
        assert_eq!(
            a.scoped("spec", true).leaf_paths(),
            vec![".spec.replicas", ".spec.template.image"]
        );
    }

    #[test]
    fn merging_an_apply() {
        let t = services();
        let owned = |o: Value| FieldSet::of(&o, t);
        let none = FieldSet::default();
        let live = svc(json!({"replicas": 2, "template": {
            "image": "x", "command": ["a"],
            "ports": [{"containerPort": 80, "protocol": "tcp"}, {"containerPort": 53, "protocol": "udp"}],
            "env": [{"name": "A", "value": "1"}],
            "placement": {"clusters": ["c1"]}}}));
        for (case, applied, previous, others, want) in [
            (
                "maps merge, scalars and atomic lists are replaced",
                json!({"spec": {"template": {"image": "y", "command": ["b", "c"]}}}),
                none.clone(),
                none.clone(),
                json!({"replicas": 2, "template": {"image": "y", "command": ["b", "c"],
                    "ports": [{"containerPort": 80, "protocol": "tcp"}, {"containerPort": 53, "protocol": "udp"}],
                    "env": [{"name": "A", "value": "1"}], "placement": {"clusters": ["c1"]}}}),
            ),
            (
                "list-maps merge by key, a missing key is its default; sets merge",
                json!({"spec": {"template": {"ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}],
                                             "env": [{"name": "B", "value": "2"}],
                                             "placement": {"clusters": ["c2", "c1"]}}}}),
                none.clone(),
                none.clone(),
                json!({"replicas": 2, "template": {"image": "x", "command": ["a"],
                    "ports": [{"containerPort": 80, "protocol": "tcp", "hostPort": 8080}, {"containerPort": 53, "protocol": "udp"}, {"containerPort": 81}],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "placement": {"clusters": ["c1", "c2"]}}}),
            ),
            (
                "what the applier owned and omits now goes, unless another owns it",
                json!({"spec": {"template": {"image": "x"}}}),
                owned(json!({"spec": {"replicas": 2, "template": {"image": "x", "command": ["a"],
                    "env": [{"name": "A", "value": "1"}], "placement": {"clusters": ["c1"]}}}})),
                owned(json!({"spec": {"replicas": 2}})),
                json!({"replicas": 2, "template": {"image": "x",
                    "ports": [{"containerPort": 80, "protocol": "tcp"}, {"containerPort": 53, "protocol": "udp"}],
                    "env": [], "placement": {"clusters": []}}}),
            ),
            (
                "a list-map item another manager still has a field of stays",
                json!({"spec": {"template": {"image": "x"}}}),
                owned(json!({"spec": {"template": {"ports": [{"containerPort": 53, "protocol": "udp"}]}}})),
                owned(json!({"spec": {"template": {"ports": [{"containerPort": 53, "protocol": "udp", "hostPort": 1}]}}})).difference(
                    &owned(json!({"spec": {"template": {"ports": [{"containerPort": 53, "protocol": "udp"}]}}}))),
                live["spec"].clone(),
            ),
        ] {
            let merged = merge_apply(&live, &applied, &previous, &others, t);
            assert_eq!(merged["spec"], want, "{case}");
        }
        // Apply to nothing: the applied object.
        let applied = svc(json!({"replicas": 1, "template": {"image": "x"}}));
        assert_eq!(
            merge_apply(&Value::Null, &applied, &none, &none, t),
            applied
        );
    }

    fn entry(manager: &str, operation: Operation, object: Value) -> ManagedEntry {
        ManagedEntry {
            manager: manager.into(),
            operation,
            api_version: "oakestra.io/v1".into(),
            time: Some("t0".into()),
            subresource: None,
            fields: FieldSet::of(&object, services()),
        }
    }

    #[test]
    fn conflicts_are_changed_fields_others_own() {
        let t = services();
        let live = svc(json!({"replicas": 2, "template": {"image": "x"}}));
        let a = entry(
            "a",
            Operation::Apply,
            json!({"spec": {"replicas": 2, "template": {"image": "x"}}}),
        );
        let k = entry(
            "kubectl",
            Operation::Update,
            json!({"spec": {"template": {"image": "x"}}}),
        );
        let managers = [a, k];
        for (applier, applied, want) in [
            ("b", json!({"spec": {"replicas": 2}}), vec![]),
            (
                "b",
                json!({"spec": {"replicas": 3}}),
                vec![("a", ".spec.replicas")],
            ),
            (
                "b",
                json!({"spec": {"replicas": 3, "template": {"image": "y"}}}),
                vec![
                    ("a", ".spec.replicas"),
                    ("a", ".spec.template.image"),
                    ("kubectl", ".spec.template.image"),
                ],
            ),
            ("a", json!({"spec": {"replicas": 3}}), vec![]),
            (
                "a",
                json!({"spec": {"template": {"image": "y"}}}),
                vec![("kubectl", ".spec.template.image")],
            ),
        ] {
            let next = merge_apply(
                &live,
                &applied,
                &FieldSet::default(),
                &FieldSet::default(),
                t,
            );
            let set = FieldSet::of(&applied, t);
            let got: Vec<(String, String)> = conflicts(&live, &next, &set, applier, &managers, t)
                .into_iter()
                .map(|c| (c.manager, c.field))
                .collect();
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(m, f)| (m.to_string(), f.to_string()))
                .collect();
            assert_eq!(got, want, "{applier} applies {applied}");
        }
        let one = [Conflict {
            manager: "a".into(),
            field: ".spec.replicas".into(),
            path: vec![],
        }];
        assert_eq!(
            conflict_message(&one, "oakestra.io/v1"),
            "Apply failed with 1 conflict: conflict with \"a\" using oakestra.io/v1: .spec.replicas"
        );
        let two = [
            one[0].clone(),
            Conflict {
                manager: "b".into(),
                field: ".spec.x".into(),
                path: vec![],
            },
        ];
        assert_eq!(
            conflict_message(&two, "oakestra.io/v1"),
            "Apply failed with 2 conflicts: conflicts with \"a\" using oakestra.io/v1:\n- .spec.replicas\nconflicts with \"b\" using oakestra.io/v1:\n- .spec.x"
        );
    }

    fn writer(manager: &str, operation: Operation, applied: Option<Value>, force: bool) -> Writer {
        Writer {
            manager: manager.into(),
            operation,
            subresource: None,
            scope: Scope::WithoutStatus,
            api_version: "oakestra.io/v1".into(),
            applied: applied.map(|a| FieldSet::of(&a, services())),
            force,
        }
    }

    type Owners = Vec<(&'static str, Vec<&'static str>)>;

    fn owners(entries: &[ManagedEntry]) -> Owners {
        entries
            .iter()
            .map(|e| {
                let name: &'static str =
                    Box::leak(format!("{}:{:?}", e.manager, e.operation).into_boxed_str());
                let paths = e
                    .fields
                    .leaf_paths()
                    .into_iter()
                    .map(|p| &*Box::leak(p.into_boxed_str()))
                    .collect();
                (name, paths)
            })
            .collect()
    }

    #[test]
    fn recording_managed_fields() {
        let t = services();
        let before = svc(json!({"replicas": 2, "template": {"image": "x"}}));
        let a = entry(
            "a",
            Operation::Apply,
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 2, "template": {"image": "x"}}}),
        );
        let with_status = {
            let mut o = before.clone();
            o["status"] = json!({"replicas": 1});
            o
        };
        for (case, after, w, want) in [
            (
                "an update owns what it changed; the others lose it",
                svc(json!({"replicas": 3, "template": {"image": "x"}})),
                writer("kubectl", Operation::Update, None, false),
                Ok(vec![
                    (
                        "a:Apply",
                        vec![".metadata.labels.app", ".spec.template.image"],
                    ),
                    ("kubectl:Update", vec![".spec.replicas"]),
                ]),
            ),
            (
                "a removed field leaves its owner; an emptied entry goes",
                {
                    let mut o = svc(json!({"template": {"image": "x"}}));
                    o["metadata"]["labels"] = json!({});
                    o
                },
                writer("kubectl", Operation::Update, None, false),
                Ok(vec![
                    ("a:Apply", vec![".spec.template.image"]),
                    ("kubectl:Update", vec![".metadata.labels"]),
                ]),
            ),
            (
                "nothing changed: nothing recorded",
                before.clone(),
                writer("kubectl", Operation::Update, None, false),
                Ok(vec![(
                    "a:Apply",
                    vec![
                        ".metadata.labels.app",
                        ".spec.replicas",
                        ".spec.template.image",
                    ],
                )]),
            ),
            (
                "status is out of a main write's scope",
                with_status.clone(),
                writer("kubectl", Operation::Update, None, false),
                Ok(vec![(
                    "a:Apply",
                    vec![
                        ".metadata.labels.app",
                        ".spec.replicas",
                        ".spec.template.image",
                    ],
                )]),
            ),
            (
                "an apply changing another's field conflicts",
                svc(json!({"replicas": 5, "template": {"image": "x"}})),
                writer(
                    "b",
                    Operation::Apply,
                    Some(json!({"spec": {"replicas": 5}})),
                    false,
                ),
                Err(vec![("a", ".spec.replicas")]),
            ),
            (
                "forced, it takes the field",
                svc(json!({"replicas": 5, "template": {"image": "x"}})),
                writer(
                    "b",
                    Operation::Apply,
                    Some(json!({"spec": {"replicas": 5}})),
                    true,
                ),
                Ok(vec![
                    (
                        "a:Apply",
                        vec![".metadata.labels.app", ".spec.template.image"],
                    ),
                    ("b:Apply", vec![".spec.replicas"]),
                ]),
            ),
            (
                "the same value is shared",
                before.clone(),
                writer(
                    "b",
                    Operation::Apply,
                    Some(json!({"spec": {"replicas": 2}})),
                    false,
                ),
                Ok(vec![
                    (
                        "a:Apply",
                        vec![
                            ".metadata.labels.app",
                            ".spec.replicas",
                            ".spec.template.image",
                        ],
                    ),
                    ("b:Apply", vec![".spec.replicas"]),
                ]),
            ),
        ] {
            let got = record(Some(&before), &after, std::slice::from_ref(&a), &w, t, "t1");
            let got = got.map(|e| owners(&e)).map_err(|c| {
                c.into_iter()
                    .map(|c| {
                        (
                            Box::leak(c.manager.into_boxed_str()) as &str,
                            Box::leak(c.field.into_boxed_str()) as &str,
                        )
                    })
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "{case}");
        }
        // A create by apply: one entry, stamped; re-recording the same write keeps the time.
        let w = writer(
            "a",
            Operation::Apply,
            Some(json!({"spec": {"replicas": 2}})),
            false,
        );
        let created = record(None, &before, &[], &w, t, "t1").unwrap();
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].time.as_deref(), Some("t1"));
        let again = record(Some(&before), &before, &created, &w, t, "t2").unwrap();
        assert_eq!(again, created);
        // Entries survive their JSON form.
        let v = created[0].to_value();
        assert_eq!(v["fieldsType"], "FieldsV1");
        assert_eq!(ManagedEntry::from_value(&v).unwrap(), created[0]);
    }

    #[test]
    fn kubectl_takes_over_what_client_side_apply_last_set() {
        let t = services();
        let mut live = svc(json!({"replicas": 2, "template": {"image": "x"}}));
        live["metadata"]["annotations"] = json!({LAST_APPLIED:
            r#"{"apiVersion":"oakestra.io/v1","kind":"Service","metadata":{"name":"web"},"spec":{"replicas":2,"template":{"image":"old"}}}"#});
        let unchanged = unchanged_since_client_side_apply(&live, t);
        assert_eq!(unchanged.leaf_paths(), vec![".spec.replicas"]);
        let csa = entry(
            "kubectl-client-side-apply",
            Operation::Update,
            json!({"spec": {"replicas": 2, "template": {"image": "x"}}}),
        );
        for (manager, spec, want) in [
            ("kubectl", json!({"replicas": 4}), Ok(())),
            ("other", json!({"replicas": 4}), Err(vec![".spec.replicas"])),
            // Changed since the annotation (by someone else): still a conflict.
            (
                "kubectl",
                json!({"template": {"image": "y"}}),
                Err(vec![".spec.template.image"]),
            ),
        ] {
            let applied = json!({"spec": spec});
            let after = merge_apply(
                &live,
                &applied,
                &FieldSet::default(),
                &FieldSet::default(),
                t,
            );
            let w = writer(manager, Operation::Apply, Some(applied), false);
            let got = record(Some(&live), &after, std::slice::from_ref(&csa), &w, t, "t1")
                .map(|_| ())
                .map_err(|c| c.into_iter().map(|c| c.field).collect::<Vec<_>>());
            let want =
                want.map_err(|f: Vec<&str>| f.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "{manager} applies {spec}");
        }
    }
}
