//! Discovery documents (`/api`, `/apis`, `/apis/oakestra.io/v1`), `/version` and the
//! `OpenAPI` v3 document of the served kinds, in the shapes Kubernetes clients expect.

use crds::{KindInfo, GROUP, KINDS, VERSION};
use serde_json::{json, Value};

use crate::registry::{strategy, Subresource};

/// `/api`: the versions of the core group (only `v1`).
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// The served version of the `oakestra.io` group, as discovery lists it.
fn group_version() -> Value {
    json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION})
}

/// `/apis`: the `APIGroupList` of the named groups (only `oakestra.io`).
pub fn groups() -> Value {
    let version = group_version();
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{"name": GROUP, "versions": [version.clone()], "preferredVersion": version}],
    })
}

/// `/apis/<name>`: the `APIGroup`, if the server serves that group.
pub fn group(name: &str) -> Option<Value> {
    (name == GROUP).then(|| {
        let version = group_version();
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [version.clone()], "preferredVersion": version})
    })
}

/// The kinds of one group version, or `None` when it is not served.
fn served(group: &str, version: &str) -> Option<Vec<&'static KindInfo>> {
    let kinds: Vec<&KindInfo> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    (!kinds.is_empty()).then_some(kinds)
}

/// The `APIResourceList` of one group version (`""` for core).
pub fn resources(group: &str, version: &str) -> Option<Value> {
    let kinds = served(group, version)?;
    let mut resources = Vec::new();
    for k in kinds {
        resources.push(json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            "shortNames": k.short_names,
            "categories": if group.is_empty() { vec![] } else { vec!["oakestra"] },
        }));
        let rules = strategy::for_kind(k);
        for sub in Subresource::ALL.into_iter().filter(|s| rules.serves(k, *s)) {
            resources.push(json!({
                "name": format!("{}/{}", k.plural, sub.name()),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": sub.object_kind(k),
                "verbs": sub.verbs(),
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// `/version`: a Kubernetes-shaped version (kubectl checks it), naming this build.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("v1.32.0+oakestra-{}", env!("CARGO_PKG_VERSION")),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// Name of a kind's schema in the `OpenAPI` document.
fn schema_name(k: &KindInfo) -> String {
    if k.group.is_empty() {
        format!("io.k8s.api.core.v1.{}", k.kind)
    } else {
        format!("io.oakestra.{}.{}", k.version, k.kind)
    }
}

/// `/openapi/v3`: where each group version's document is.
pub fn openapi_index() -> Value {
    json!({"paths": {
        "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"},
        format!("apis/{GROUP}/{VERSION}"): {"serverRelativeURL": format!("/openapi/v3/apis/{GROUP}/{VERSION}")},
    }})
}

/// The `OpenAPI` v3 document of one group version, schemas generated from the types.
pub fn openapi(group: &str, version: &str) -> Option<Value> {
    let kinds = served(group, version)?;
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    // `dryRun` is honoured by every write (kubectl looks for it before a server-side
    // dry run or a diff), and by no read.
    let read_params = json!([
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
    ]);
    let write_params = json!([
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
        {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
    ]);
    for k in kinds {
        let mut schema = k.schema().clone().to_value();
        // Move `$defs` into components and point references there.
        if let Some(defs) = schema.as_object_mut().and_then(|o| o.remove("$defs")) {
            for (name, def) in defs.as_object().into_iter().flatten() {
                schemas.insert(format!("{}.{name}", schema_name(k)), def.clone());
            }
        }
        if let Some(o) = schema.as_object_mut() {
            o.remove("$schema");
            o.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": k.group, "version": k.version, "kind": k.kind}]),
            );
        }
        openapi_compatible(&mut schema);
        schemas.values_mut().for_each(openapi_compatible);
        let mut text = serde_json::to_string(&schema).expect("schema serializes");
        let mut defs_text = serde_json::to_string(&schemas).expect("schemas serialize");
        let ref_prefix = format!("#/components/schemas/{}.", schema_name(k));
        text = text.replace("#/$defs/", &ref_prefix);
        defs_text = defs_text.replace("#/$defs/", &ref_prefix);
        schemas = serde_json::from_str(&defs_text).expect("valid JSON");
        schemas.insert(
            schema_name(k),
            serde_json::from_str(&text).expect("valid JSON"),
        );
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let collection = if k.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", k.plural)
        } else {
            format!("{base}/{}", k.plural)
        };
        let body_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(k))});
        let op = |verb: &str| {
            let params = match verb {
                "list" | "read" => &read_params,
                _ => &write_params,
            };
            json!({
                "operationId": format!("{verb}{}", k.kind),
                "parameters": params,
                "x-kubernetes-group-version-kind": {"group": k.group, "version": k.version, "kind": k.kind},
                "requestBody": {"content": {"application/json": {"schema": body_ref}}},
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": body_ref}}}},
            })
        };
        paths.insert(
            collection.clone(),
            json!({"get": op("list"), "post": op("create")}),
        );
        paths.insert(format!("{collection}/{{name}}"), json!({"get": op("read"), "put": op("replace"), "patch": op("patch"), "delete": op("delete")}));
        if strategy::for_kind(k).serves(k, Subresource::Status) {
            paths.insert(
                format!("{collection}/{{name}}/status"),
                json!({"get": op("read"), "put": op("replace"), "patch": op("patch")}),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Oakestra", "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// Turn a JSON Schema (draft 2020-12, as schemars writes it) into the `OpenAPI` 3.0
/// dialect that kubectl reads (`explain` walks it; a type list makes its template
/// fail): boolean schemas become empty ones; `type: [T, "null"]` becomes `type: T,
/// nullable: true`; an optional reference (`anyOf: [{$ref}, {type: null}]`) and a
/// reference with siblings (its description) become `allOf: [{$ref}]`, as
/// kube-apiserver publishes them; an enum of documented constants (`oneOf` of `const`s)
/// becomes `enum` with the constants' descriptions in its own ("Possible enum values").
/// Extensions (`x-kubernetes-*`) are kept as they are.
fn openapi_compatible(schema: &mut Value) {
    let Value::Object(map) = schema else {
        if let Value::Array(items) = schema {
            items.iter_mut().for_each(openapi_compatible);
        }
        return;
    };
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" => {
                for property in value
                    .as_object_mut()
                    .into_iter()
                    .flat_map(|m| m.values_mut())
                {
                    if property.is_boolean() {
                        *property = json!({});
                    } else {
                        openapi_compatible(property);
                    }
                }
            }
            "items" if value.is_boolean() => *value = json!({}),
            "items" | "additionalProperties" | "not" | "allOf" | "anyOf" | "oneOf" => {
                openapi_compatible(value)
            }
            _ => {}
        }
    }
    nullable_type(map);
    nullable_reference(map);
    reference_with_siblings(map);
    documented_enum(map);
}

/// `type: [T, "null"]` → `type: T, nullable: true`.
fn nullable_type(map: &mut serde_json::Map<String, Value>) {
    let Some(Value::Array(types)) = map.get("type") else {
        return;
    };
    let mut rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
    let nullable = rest.len() < types.len();
    if rest.len() == 1 {
        map.insert("type".into(), rest.remove(0));
    } else {
        // Several types are not `OpenAPI` 3.0: say nothing rather than something wrong.
        map.remove("type");
    }
    if nullable {
        map.insert("nullable".into(), Value::Bool(true));
    }
}

/// `anyOf: [S, {type: null}]` → S's keywords (a reference as `allOf: [S]`) and
/// `nullable: true`.
fn nullable_reference(map: &mut serde_json::Map<String, Value>) {
    let Some(Value::Array(any)) = map.get("anyOf") else {
        return;
    };
    let is_null = |s: &Value| {
        s.get("type") == Some(&json!("null")) && s.as_object().is_some_and(|o| o.len() == 1)
    };
    let (nulls, others): (Vec<&Value>, Vec<&Value>) = any.iter().partition(|s| is_null(s));
    let [only] = others.as_slice() else { return };
    if nulls.is_empty() {
        return;
    }
    let only = (*only).clone();
    map.remove("anyOf");
    if let Value::Object(keywords) = only {
        for (k, v) in keywords {
            map.entry(k).or_insert(v);
        }
    }
    map.insert("nullable".into(), Value::Bool(true));
}

/// `$ref` next to other keywords (which `OpenAPI` 3.0 ignores) → `allOf: [{$ref}]`.
fn reference_with_siblings(map: &mut serde_json::Map<String, Value>) {
    if map.len() > 1 && map.contains_key("$ref") {
        let reference = map.remove("$ref").expect("checked");
        map.insert("allOf".into(), json!([{ "$ref": reference }]));
    }
}

/// `oneOf` of `{const, description}` → `enum` of the constants, and a description
/// listing them with theirs, as kube-apiserver documents enums.
fn documented_enum(map: &mut serde_json::Map<String, Value>) {
    let Some(Value::Array(variants)) = map.get("oneOf") else {
        return;
    };
    if variants.is_empty() || !variants.iter().all(|v| v.get("const").is_some()) {
        return;
    }
    let values: Vec<Value> = variants.iter().map(|v| v["const"].clone()).collect();
    let lines: Vec<String> = variants
        .iter()
        .map(|v| {
            let text = v.get("description").and_then(Value::as_str).unwrap_or("");
            format!(" - `{}` {text}", v["const"]).trim_end().to_string()
        })
        .collect();
    let ty = variants[0].get("type").cloned();
    let own = map.get("description").and_then(Value::as_str).unwrap_or("");
    let description = format!("{own}\n\nPossible enum values:\n{}", lines.join("\n"));
    map.remove("oneOf");
    map.insert("enum".into(), Value::Array(values));
    if let Some(ty) = ty.filter(|_| !map.contains_key("type")) {
        map.insert("type".into(), ty);
    }
    map.insert("description".into(), description.trim_start().into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_rewritten_into_the_openapi_dialect_kubectl_reads() {
        let cases = [
            (
                "a nullable scalar",
                json!({"type": ["string", "null"], "description": "d"}),
                json!({"type": "string", "nullable": true, "description": "d"}),
            ),
            (
                "an optional reference keeps its description",
                json!({"anyOf": [{"$ref": "#/r/Geo"}, {"type": "null"}], "description": "d"}),
                json!({"allOf": [{"$ref": "#/r/Geo"}], "nullable": true, "description": "d"}),
            ),
            (
                "a described reference",
                json!({"$ref": "#/r/Status", "description": "d"}),
                json!({"allOf": [{"$ref": "#/r/Status"}], "description": "d"}),
            ),
            (
                "a bare reference stays",
                json!({"$ref": "#/r/Status"}),
                json!({"$ref": "#/r/Status"}),
            ),
            (
                "a documented enum",
                json!({"description": "How.", "oneOf": [
                    {"const": "tcp", "type": "string", "description": "TCP."},
                    {"const": "udp", "type": "string"},
                ]}),
                json!({"type": "string", "enum": ["tcp", "udp"],
                    "description": "How.\n\nPossible enum values:\n - `\"tcp\"` TCP.\n - `\"udp\"`"}),
            ),
            (
                "nested properties, items and boolean schemas",
                json!({"type": "object", "properties": {
                    "any": true,
                    "list": {"type": ["array", "null"], "items": true},
                    "map": {"type": "object", "additionalProperties": {"type": ["integer", "null"]}},
                }, "x-kubernetes-group-version-kind": [{"kind": "Service"}]}),
                json!({"type": "object", "properties": {
                    "any": {},
                    "list": {"type": "array", "nullable": true, "items": {}},
                    "map": {"type": "object", "additionalProperties": {"type": "integer", "nullable": true}},
                }, "x-kubernetes-group-version-kind": [{"kind": "Service"}]}),
            ),
            (
                "defaults are values, not schemas",
                json!({"type": "object", "default": {"type": ["a", "null"]}}),
                json!({"type": "object", "default": {"type": ["a", "null"]}}),
            ),
        ];
        for (what, mut schema, expected) in cases {
            openapi_compatible(&mut schema);
            assert_eq!(schema, expected, "{what}");
            let again = schema.clone();
            openapi_compatible(&mut schema);
            assert_eq!(schema, again, "{what}: a second pass changes nothing");
        }
    }

    /// Every property of every served schema has a description and no type list.
    #[test]
    fn every_field_of_the_served_document_is_described() {
        let doc = openapi(GROUP, VERSION).expect("served");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut missing = Vec::new();
        for (name, schema) in schemas {
            for (field, property) in schema["properties"].as_object().into_iter().flatten() {
                let described = property.get("description").and_then(Value::as_str);
                if described.is_none_or(str::is_empty) {
                    missing.push(format!("{name}.{field}"));
                }
                assert!(
                    !property.get("type").is_some_and(Value::is_array),
                    "{name}.{field} has a type list"
                );
            }
        }
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
        let service = &schemas["io.oakestra.v1.Service"];
        assert_eq!(
            service["x-kubernetes-group-version-kind"][0]["kind"],
            "Service"
        );
    }
}
