//! Validation of objects against their kind's schema and rules.
//!
//! Three layers, each naming the offending field by its dotted path:
//! 1. typed decoding (`serde_path_to_error`): wrong types, missing required fields,
//!    unknown enum values;
//! 2. a walk over the generated JSON schema: fields the schema does not declare;
//! 3. the kind's own rules ([`crate::Resource::check`]), e.g. `spec.replicas: must be >= 0`.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use serde_json::Value;

use crate::{EnvVar, Location, Resource, RuntimeKind, Workload};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.template.ports[0].containerPort`.
    pub field: String,
    /// What is wrong with it, e.g. `must be >= 0`.
    pub message: String,
}

impl FieldError {
    /// An error for the field at the dotted path `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// All the invalid fields of an object.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))]
pub struct ValidationError {
    /// Every invalid field found (at least one).
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    /// An error with one invalid field.
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            errors: vec![FieldError::new(field, message)],
        }
    }
}

/// Validate `value` as an object of type `T`; returns it with defaults filled in.
pub fn object<T: Resource>(value: &Value) -> Result<Value, ValidationError> {
    let mut errors = Vec::new();
    unknown_fields(T::info().schema(), value, &mut errors);
    if !errors.is_empty() {
        return Err(ValidationError { errors });
    }
    // Plain decoding first; only a failure is decoded again to find the field's path
    // (tracking the path costs as much as the decoding itself).
    let typed = match T::deserialize(value) {
        Ok(t) => t,
        Err(plain) => match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(_) => return Err(ValidationError::single("", plain.to_string())),
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                return Err(ValidationError::single(path, e.into_inner().to_string()));
            }
        },
    };
    typed.check(&mut errors);
    if errors.is_empty() {
        serde_json::to_value(&typed).map_err(|e| ValidationError::single("", e.to_string()))
    } else {
        Err(ValidationError { errors })
    }
}

/// Report every object key of `value` that `schema` does not declare.
fn unknown_fields(schema: &'static schemars::Schema, value: &Value, errors: &mut Vec<FieldError>) {
    let shapes = Shapes::of(schema);
    walk(shapes, 0, value, &Path::Root, errors);
}

/// A schema reduced to what the unknown-field walk asks of it, with `$ref`s and
/// `anyOf`/`oneOf`/`allOf` wrappers resolved once: node 0 is the whole object, and
/// each node names the nodes of its fields, of its map values and of its items. Built
/// on a kind's first write (the walk visits every field of every write, and looking
/// keys up in the JSON schema itself was most of its cost).
#[derive(Default)]
struct Shapes {
    nodes: Vec<Shape>,
}

#[derive(Default)]
struct Shape {
    /// Declared fields (an object with any other key is rejected).
    properties: Option<HashMap<String, usize>>,
    /// The schema of every value of a map (when there are no declared fields).
    additional: Option<usize>,
    /// The schema of every item of an array.
    items: Option<usize>,
}

impl Shapes {
    /// The shapes of `schema`, compiled on first use and kept for the process.
    fn of(schema: &'static schemars::Schema) -> &'static Shapes {
        type Cache = RwLock<HashMap<usize, &'static Shapes>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Cache::default);
        let id = schema as *const schemars::Schema as usize;
        if let Some(shapes) = cache.read().expect("shape cache").get(&id) {
            return shapes;
        }
        let mut shapes = Shapes::default();
        let root = schema.as_value();
        shapes.add(root, root, &mut HashMap::new());
        let shapes: &'static Shapes = Box::leak(Box::new(shapes));
        cache
            .write()
            .expect("shape cache")
            .entry(id)
            .or_insert(shapes)
    }

    /// The node of `schema` (added with the nodes it leads to unless `seen` has it:
    /// recursive schemas point back to their node).
    fn add(
        &mut self,
        root: &Value,
        schema: &Value,
        seen: &mut HashMap<*const Value, usize>,
    ) -> usize {
        let schema = resolve(root, schema);
        if let Some(&node) = seen.get(&(schema as *const Value)) {
            return node;
        }
        let node = self.nodes.len();
        self.nodes.push(Shape::default());
        seen.insert(schema as *const Value, node);
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .map(|(key, field)| (key.clone(), self.add(root, field, seen)))
                    .collect()
            });
        let additional = schema
            .get("additionalProperties")
            .filter(|a| a.is_object())
            .map(|a| self.add(root, a, seen));
        let items = schema.get("items").map(|i| self.add(root, i, seen));
        self.nodes[node] = Shape {
            properties,
            additional,
            items,
        };
        node
    }
}

/// Where the walk is: a chain of steps on the stack, spelled out only for an error (the
/// walk visits every field of every write).
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => write!(f, "{key}"),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut schema = schema;
    // `$ref` into `$defs`, and `anyOf`/`oneOf`/`allOf` wrappers (e.g. Option<T>): take
    // the first object-shaped alternative.
    for _ in 0..16 {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default();
            match root.get("$defs").and_then(|d| d.get(name)) {
                Some(s) => schema = s,
                None => return schema,
            }
            continue;
        }
        let alternatives = ["anyOf", "oneOf", "allOf"]
            .iter()
            .find_map(|k| schema.get(*k).and_then(Value::as_array));
        match alternatives {
            Some(alts) => {
                let next = alts.iter().find(|a| {
                    a.get("$ref").is_some()
                        || a.get("properties").is_some()
                        || a.get("items").is_some()
                });
                match next {
                    Some(n) => schema = n,
                    None => return schema,
                }
            }
            None => return schema,
        }
    }
    schema
}

fn walk(shapes: &Shapes, node: usize, value: &Value, path: &Path, errors: &mut Vec<FieldError>) {
    let shape = &shapes.nodes[node];
    match value {
        Value::Object(map) => {
            if let Some(props) = &shape.properties {
                for (key, v) in map {
                    let child = Path::Key(path, key);
                    match props.get(key.as_str()) {
                        Some(&field) => walk(shapes, field, v, &child, errors),
                        None => errors.push(FieldError::new(child.to_string(), "unknown field")),
                    }
                }
            } else if let Some(extra) = shape.additional {
                for (key, v) in map {
                    walk(shapes, extra, v, &Path::Key(path, key), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = shape.items {
                for (i, v) in items.iter().enumerate() {
                    walk(shapes, item, v, &Path::Index(path, i), errors);
                }
            }
        }
        _ => {}
    }
}

/// Latitude and longitude within range.
pub fn location(l: &Location, path: &str, errors: &mut Vec<FieldError>) {
    if !(-90.0..=90.0).contains(&l.latitude) {
        errors.push(FieldError::new(
            format!("{path}.latitude"),
            "must be between -90 and 90",
        ));
    }
    if !(-180.0..=180.0).contains(&l.longitude) {
        errors.push(FieldError::new(
            format!("{path}.longitude"),
            "must be between -180 and 180",
        ));
    }
}

/// A workload names what to run for its runtime, and its ports and constraints are sane.
pub fn workload(w: &Workload, path: &str, errors: &mut Vec<FieldError>) {
    match w.runtime {
        RuntimeKind::Container | RuntimeKind::Unikernel => {
            if w.image.as_deref().unwrap_or_default().is_empty() {
                errors.push(FieldError::new(
                    format!("{path}.image"),
                    format!("required for runtime {:?}", w.runtime).to_lowercase(),
                ));
            }
        }
        RuntimeKind::Process => {
            if w.executable.as_deref().unwrap_or_default().is_empty() && w.command.is_empty() {
                errors.push(FieldError::new(
                    format!("{path}.executable"),
                    "required for runtime process (or give command)",
                ));
            }
        }
    }
    for (i, p) in w.ports.iter().enumerate() {
        if p.container_port == 0 {
            errors.push(FieldError::new(
                format!("{path}.ports[{i}].containerPort"),
                "must be 1..=65535",
            ));
        }
        if p.host_port == Some(0) {
            errors.push(FieldError::new(
                format!("{path}.ports[{i}].hostPort"),
                "must be 1..=65535",
            ));
        }
    }
    for (i, e) in w.env.iter().enumerate() {
        env_var(e, &format!("{path}.env[{i}]"), errors);
    }
    if let Some(geo) = &w.placement.geo {
        let l = Location {
            latitude: geo.latitude,
            longitude: geo.longitude,
            place: None,
        };
        location(&l, &format!("{path}.placement.geo"), errors);
        if geo.max_distance_km.is_nan() || geo.max_distance_km < 0.0 {
            errors.push(FieldError::new(
                format!("{path}.placement.geo.maxDistanceKm"),
                "must be >= 0",
            ));
        }
    }
}

/// One environment variable: a name, and either a value or one source.
fn env_var(e: &EnvVar, path: &str, errors: &mut Vec<FieldError>) {
    if e.name.is_empty() || e.name.contains('=') {
        errors.push(FieldError::new(
            format!("{path}.name"),
            "must be non-empty and contain no '='",
        ));
    }
    let Some(from) = &e.value_from else {
        return;
    };
    if !e.value.is_empty() {
        errors.push(FieldError::new(
            format!("{path}.valueFrom"),
            "may not be given together with value",
        ));
    }
    let refs = [
        ("configMapKeyRef", &from.config_map_key_ref),
        ("secretKeyRef", &from.secret_key_ref),
    ];
    let given: Vec<_> = refs.iter().filter(|(_, r)| r.is_some()).collect();
    if given.len() != 1 {
        errors.push(FieldError::new(
            format!("{path}.valueFrom"),
            "must give exactly one of configMapKeyRef and secretKeyRef",
        ));
    }
    for (field, selector) in given {
        let selector = selector.as_ref().expect("given");
        let at = format!("{path}.valueFrom.{field}");
        if let Err(why) = name(&selector.name) {
            errors.push(FieldError::new(format!("{at}.name"), why));
        }
        if let Err(why) = config_key(&selector.key) {
            errors.push(FieldError::new(format!("{at}.key"), why));
        }
    }
}

/// A key of a `ConfigMap` or Secret: letters, digits, `-`, `_` and `.`, at most 253
/// characters, not `.` or `..` (Kubernetes' rule: a key can be a file name).
pub fn config_key(key: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if key.is_empty() {
        Err("must not be empty".into())
    } else if key.len() > 253 {
        Err("must be no more than 253 characters".into())
    } else if key == "." || key == ".." {
        Err(format!("{key:?} is not a valid key"))
    } else if !key.chars().all(ok_char) {
        Err(format!(
            "{key:?} is not a valid key: use letters, digits, '-', '_' and '.'"
        ))
    } else {
        Ok(())
    }
}

/// Every key of a `ConfigMap`'s or Secret's map `field` is a valid key.
pub fn config_keys<'k>(
    keys: impl Iterator<Item = &'k String>,
    field: &str,
    errors: &mut Vec<FieldError>,
) {
    for key in keys {
        if let Err(why) = config_key(key) {
            errors.push(FieldError::new(format!("{field}[{key}]"), why));
        }
    }
}

/// A value stored base64-encoded (standard alphabet, padded, as Kubernetes sends it).
pub fn base64_value(value: &str, field: &str, errors: &mut Vec<FieldError>) {
    use base64::Engine as _;
    if base64::engine::general_purpose::STANDARD
        .decode(value)
        .is_err()
    {
        errors.push(FieldError::new(
            field,
            "must be base64-encoded (the standard alphabet, padded); use stringData for plain text",
        ));
    }
}

/// A DNS-1123 subdomain: lowercase alphanumerics, '-' and '.', at most 253 characters,
/// starting and ending with an alphanumeric.
pub fn name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() {
        Err("must not be empty".into())
    } else if name.len() > 253 {
        Err("must be no more than 253 characters".into())
    } else if !name.chars().all(ok_char)
        || !alnum(name.chars().next())
        || !alnum(name.chars().last())
    {
        Err(format!(
            "{name:?} is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind_by_name;
    use serde_json::json;

    fn service(spec: Value) -> Value {
        json!({"apiVersion": "oakestra.io/v1", "kind": "Service", "metadata": {"name": "web"}, "spec": spec})
    }

    fn errors(v: &Value) -> Vec<String> {
        match kind_by_name("svc").unwrap().validate(v) {
            Ok(_) => vec![],
            Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn valid_service_passes() {
        let v = service(
            json!({"replicas": 2, "template": {"image": "busybox", "ports": [{"containerPort": 80, "hostPort": 8080}]}}),
        );
        assert_eq!(errors(&v), Vec::<String>::new());
    }

    #[test]
    fn negative_replicas_named() {
        let v = service(json!({"replicas": -1, "template": {"image": "busybox"}}));
        assert_eq!(errors(&v), vec!["spec.replicas: must be >= 0"]);
    }

    #[test]
    fn environment_sources_are_checked() {
        let env = |e: Value| service(json!({"template": {"image": "b", "env": [e]}}));
        let from = |r: Value| json!({"name": "A", "valueFrom": r});
        for (var, want) in [
            (from(json!({"configMapKeyRef": {"name": "conf", "key": "mode"}})), vec![]),
            (
                json!({"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}),
                vec!["spec.template.env[0].valueFrom: may not be given together with value"],
            ),
            (
                from(json!({})),
                vec!["spec.template.env[0].valueFrom: must give exactly one of configMapKeyRef and secretKeyRef"],
            ),
            (
                from(json!({"secretKeyRef": {"name": "Db", "key": "a b"}})),
                vec![
                    "spec.template.env[0].valueFrom.secretKeyRef.name: \"Db\" is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
                    "spec.template.env[0].valueFrom.secretKeyRef.key: \"a b\" is not a valid key: use letters, digits, '-', '_' and '.'",
                ],
            ),
        ] {
            assert_eq!(errors(&env(var.clone())), want, "{var}");
        }
    }

    #[test]
    fn a_closest_ip_differs_from_the_round_robin_ip() {
        let v = service(json!({"template": {"image": "b"},
            "addressing": {"roundRobinIP": "10.30.0.9", "closestIP": "10.30.0.9"}}));
        assert_eq!(
            errors(&v),
            vec!["spec.addressing.closestIP: must differ from roundRobinIP (each routes its own way)"]
        );
    }

    #[test]
    fn unknown_field_named_with_path() {
        let v = service(
            json!({"template": {"image": "busybox", "ports": [{"containerPort": 80, "hostPrt": 1}]}}),
        );
        assert_eq!(
            errors(&v),
            vec!["spec.template.ports[0].hostPrt: unknown field"]
        );
    }

    #[test]
    fn every_unknown_field_is_named_at_every_depth() {
        let v = json!({
            "apiVersion": "oakestra.io/v1", "kind": "Service",
            "metadata": {"name": "web", "labelz": {"a": "b"}},
            "spec": {
                "extra": true,
                "template": {
                    "image": "busybox",
                    "resources": {"cpuMillicores": 100, "gpu": 1},
                    "ports": [{"containerPort": 80}, {"containerPort": 81, "proto": "udp"}],
                },
            },
            "statuz": {},
        });
        let mut found = errors(&v);
        found.sort();
        assert_eq!(
            found,
            vec![
                "metadata.labelz: unknown field",
                "spec.extra: unknown field",
                "spec.template.ports[1].proto: unknown field",
                "spec.template.resources.gpu: unknown field",
                "statuz: unknown field",
            ]
        );
    }

    #[test]
    fn wrong_type_named_with_path() {
        let v = service(json!({"replicas": "three", "template": {"image": "busybox"}}));
        let e = errors(&v);
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("spec.replicas: invalid type"), "{e:?}");
    }

    #[test]
    fn unknown_enum_value_named() {
        let v = service(json!({"template": {"runtime": "vm", "image": "x"}}));
        let e = errors(&v);
        assert!(
            e[0].starts_with("spec.template.runtime: unknown variant `vm`"),
            "{e:?}"
        );
    }

    #[test]
    fn container_needs_image() {
        let v = service(json!({"template": {}}));
        assert_eq!(
            errors(&v),
            vec!["spec.template.image: required for runtime container"]
        );
    }

    #[test]
    fn labels_are_free_form() {
        let mut v = service(json!({"template": {"image": "x"}}));
        v["metadata"]["labels"] = json!({"app": "web", "tier": "edge"});
        assert_eq!(errors(&v), Vec::<String>::new());
    }

    #[test]
    fn names_follow_dns_1123() {
        assert!(name("web-1.edge").is_ok());
        for bad in ["", "Web", "-a", "a-", "a_b", &"a".repeat(254)] {
            assert!(name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
