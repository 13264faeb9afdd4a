//! Access to an object's `metadata`.

use serde_json::{Map, Value};

/// `metadata.<field>` as a string.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// The object's `metadata` map, created (replacing a non-object) if missing.
pub fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// `metadata.resourceVersion` as a number, if present.
pub fn resource_version(object: &Value) -> Result<Option<i64>, String> {
    match meta_str(object, "resourceVersion") {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            format!("metadata.resourceVersion: {v:?} is not a valid resource version")
        }),
    }
}
