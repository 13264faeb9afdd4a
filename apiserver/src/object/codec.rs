//! The stored form of an object: its JSON without `metadata.resourceVersion`, which is
//! the storage revision of the key and is set again on every read.

use serde_json::Value;

use crate::storage::KeyValue;

/// Decode a stored value and set its `resourceVersion`.
pub fn decode(kv: &KeyValue) -> Result<Value, serde_json::Error> {
    let mut object: Value = serde_json::from_slice(&kv.value)?;
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
    }
    Ok(object)
}

/// Encode an object for storage, without its `resourceVersion`.
pub fn encode(object: &Value) -> Vec<u8> {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&object).expect("a JSON value serializes")
}
