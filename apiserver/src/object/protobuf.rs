//! Request bodies in Kubernetes' protobuf encoding, for the core kinds this server
//! shares with Kubernetes (`Namespace`, `ConfigMap`, `Secret`): kubectl's typed
//! commands (`kubectl create secret|configmap|namespace`) send them so.
//!
//! The wire format: the 4 bytes `k8s\0`, then a `runtime.Unknown` message whose `raw`
//! field is the object's message. Only what a client writes is read: the object's
//! fields and the writable part of `ObjectMeta`; fields only the server sets are
//! skipped, as the JSON path ignores them. The result is the object as JSON, which
//! then goes through the same validation as a JSON body. Answers stay JSON: Kubernetes
//! clients read the answer's `Content-Type`.

use std::collections::BTreeMap;

use base64::Engine as _;
use prost::Message;
use serde_json::{json, Map, Value};

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(message, repeated, tag = "13")]
    owner_references: Vec<OwnerReference>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct OwnerReference {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    uid: Option<String>,
    #[prost(string, optional, tag = "5")]
    api_version: Option<String>,
    #[prost(bool, optional, tag = "6")]
    controller: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    block_owner_deletion: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    type_: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<NamespaceSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct NamespaceSpec {
    #[prost(string, repeated, tag = "1")]
    finalizers: Vec<String>,
}

/// The object a protobuf body carries, as JSON; the error says what is wrong with it.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with Kubernetes' protobuf prefix")?;
    let envelope = Unknown::decode(rest).map_err(|e| format!("the envelope: {e}"))?;
    let type_meta = envelope.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = envelope.raw.unwrap_or_default();
    let bad = |e: prost::DecodeError| format!("the {kind}: {e}");
    let mut object = Map::new();
    let metadata = match kind.as_str() {
        "Secret" => {
            let s = Secret::decode(raw.as_slice()).map_err(bad)?;
            insert_map(&mut object, "data", base64_values(s.data));
            insert_map(&mut object, "stringData", text_values(s.string_data));
            if let Some(t) = s.type_ {
                object.insert("type".into(), t.into());
            }
            if let Some(i) = s.immutable {
                object.insert("immutable".into(), i.into());
            }
            s.metadata
        }
        "ConfigMap" => {
            let c = ConfigMap::decode(raw.as_slice()).map_err(bad)?;
            insert_map(&mut object, "data", text_values(c.data));
            insert_map(&mut object, "binaryData", base64_values(c.binary_data));
            if let Some(i) = c.immutable {
                object.insert("immutable".into(), i.into());
            }
            c.metadata
        }
        "Namespace" => {
            let n = Namespace::decode(raw.as_slice()).map_err(bad)?;
            if let Some(spec) = n.spec.filter(|s| !s.finalizers.is_empty()) {
                object.insert("spec".into(), json!({"finalizers": spec.finalizers}));
            }
            n.metadata
        }
        other => {
            return Err(format!(
                "kind {other:?} is not accepted as protobuf here; send JSON"
            ))
        }
    };
    object.insert("apiVersion".into(), api_version.into());
    object.insert("kind".into(), kind.into());
    object.insert("metadata".into(), meta(metadata.unwrap_or_default()));
    Ok(Value::Object(object))
}

fn base64_values(map: BTreeMap<String, Vec<u8>>) -> Map<String, Value> {
    let engine = base64::engine::general_purpose::STANDARD;
    map.into_iter()
        .map(|(k, v)| (k, Value::String(engine.encode(v))))
        .collect()
}

fn text_values(map: BTreeMap<String, String>) -> Map<String, Value> {
    map.into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

fn insert_map(object: &mut Map<String, Value>, field: &str, map: Map<String, Value>) {
    if !map.is_empty() {
        object.insert(field.into(), Value::Object(map));
    }
}

fn meta(m: ObjectMeta) -> Value {
    let mut out = Map::new();
    let mut put = |field: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.insert(field.into(), v.into());
        }
    };
    put("name", m.name);
    put("generateName", m.generate_name);
    put("namespace", m.namespace);
    put("resourceVersion", m.resource_version);
    insert_map(&mut out, "labels", text_values(m.labels));
    insert_map(&mut out, "annotations", text_values(m.annotations));
    if !m.finalizers.is_empty() {
        out.insert("finalizers".into(), json!(m.finalizers));
    }
    if !m.owner_references.is_empty() {
        let refs: Vec<Value> = m
            .owner_references
            .into_iter()
            .map(|r| {
                let mut o = json!({
                    "apiVersion": r.api_version.unwrap_or_default(),
                    "kind": r.kind.unwrap_or_default(),
                    "name": r.name.unwrap_or_default(),
                    "uid": r.uid.unwrap_or_default(),
                });
                if let Some(c) = r.controller {
                    o["controller"] = c.into();
                }
                if let Some(b) = r.block_owner_deletion {
                    o["blockOwnerDeletion"] = b.into();
                }
                o
            })
            .collect();
        out.insert("ownerReferences".into(), Value::Array(refs));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
        };
        [MAGIC.to_vec(), unknown.encode_to_vec()].concat()
    }

    fn named(name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: BTreeMap::from([("app".into(), "shop".into())]),
            ..Default::default()
        })
    }

    #[test]
    fn secrets_configmaps_and_namespaces_decode_to_their_json() {
        let secret = Secret {
            metadata: named("db"),
            data: BTreeMap::from([("password".into(), b"s3cret".to_vec())]),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        assert_eq!(
            decode(&envelope("Secret", secret.encode_to_vec())).unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "db", "namespace": "default", "labels": {"app": "shop"}},
                   "data": {"password": "czNjcmV0"}, "type": "Opaque"})
        );
        let map = ConfigMap {
            metadata: named("conf"),
            data: BTreeMap::from([("mode".into(), "fast".into())]),
            immutable: Some(true),
            ..Default::default()
        };
        assert_eq!(
            decode(&envelope("ConfigMap", map.encode_to_vec())).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "conf", "namespace": "default", "labels": {"app": "shop"}},
                   "data": {"mode": "fast"}, "immutable": true})
        );
        let ns = Namespace {
            metadata: Some(ObjectMeta {
                name: Some("shop".into()),
                ..Default::default()
            }),
            spec: None,
        };
        assert_eq!(
            decode(&envelope("Namespace", ns.encode_to_vec())).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        );
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        for (body, want) in [
            (b"{}".to_vec(), "prefix"),
            ([MAGIC, b"\xff\xff\xff"].concat(), "the envelope"),
            (
                envelope("Pod", vec![]),
                "\"Pod\" is not accepted as protobuf",
            ),
            (envelope("Secret", vec![0x0a, 0x05, 0x01]), "the Secret"),
        ] {
            let error = decode(&body).unwrap_err();
            assert!(error.contains(want), "{error}");
        }
    }
}
