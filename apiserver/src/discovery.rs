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

/// Replace JSON-Schema boolean schemas (`true`: anything goes), which `OpenAPI` parsers
/// such as kubectl's reject, with the equivalent empty schema.
fn openapi_compatible(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match (key.as_str(), &*value) {
                    ("items", Value::Bool(true)) => *value = json!({}),
                    ("properties", Value::Object(_)) => {
                        for property in value
                            .as_object_mut()
                            .into_iter()
                            .flat_map(|m| m.values_mut())
                        {
                            if property == &Value::Bool(true) {
                                *property = json!({});
                            } else {
                                openapi_compatible(property);
                            }
                        }
                    }
                    _ => openapi_compatible(value),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(openapi_compatible),
        _ => {}
    }
}
