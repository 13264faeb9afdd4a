//! Kubernetes-shaped object metadata, owner references and the `Status` error body.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A point in time, serialized as RFC 3339 in UTC (`2026-11-25T10:00:00Z`).
pub type Time = DateTime<Utc>;

/// Metadata every object carries. The server owns `uid`, `resourceVersion`,
/// `generation`, `creationTimestamp` and `deletionTimestamp`; clients set the rest.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Unique within its kind (and namespace, for namespaced kinds). DNS-1123 subdomain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Prefix for a server-generated name when `name` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// Namespace of namespaced kinds; absent for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Set by the server at creation; tells this object apart from a later one of the
    /// same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Opaque version of this object; send it back on update for optimistic concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Incremented by the server on every change of `spec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Set by the server at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Time>,
    /// Set when deletion was requested while finalizers were still present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Time>,
    /// Identifying key/value pairs that selectors (`-l app=web`) match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form key/value pairs for tools; not selectable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Names of the controllers that must clean up before the object is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub finalizers: Vec<String>,
    /// Objects this one belongs to; garbage collection deletes it with its owner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["uid"]))]
    pub owner_references: Vec<OwnerReference>,
    /// Which manager set which fields (server-side apply), as the API server keeps them:
    /// entries `{manager, operation, apiVersion, time, fieldsType: FieldsV1, fieldsV1}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub managed_fields: Option<Vec<serde_json::Value>>,
}

impl ObjectMeta {
    /// The owner that manages the object (`controller: true`), if it has one.
    pub fn controller(&self) -> Option<&OwnerReference> {
        self.owner_references
            .iter()
            .find(|o| o.controller == Some(true))
    }
}

/// Points from an object to the object that owns it (an Instance to its Service).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// `apiVersion` of the owner.
    pub api_version: String,
    /// Kind of the owner.
    pub kind: String,
    /// Name of the owner (same namespace).
    pub name: String,
    /// UID of the owner: a new owner of the same name does not adopt the object.
    pub uid: String,
    /// Whether the owner is the object's managing controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// Whether a foreground deletion of the owner waits for this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// The finalizer that makes a deletion wait until the object's dependents are gone
/// (`propagationPolicy: Foreground`).
pub const FOREGROUND_DELETION: &str = "foregroundDeletion";

/// The Kubernetes `Status` object used for errors (and successful deletes).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `Status`.
    pub kind: String,
    /// `v1`.
    pub api_version: String,
    /// Empty (list metadata in Kubernetes).
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// `Success` or `Failure`.
    pub status: String,
    /// What went wrong, for a person: names the object and the field.
    #[serde(default)]
    pub message: String,
    /// Machine-readable reason, e.g. `NotFound`, `Conflict`, `Invalid`.
    #[serde(default)]
    pub reason: String,
    /// The object concerned and, for invalid objects, each offending field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code.
    pub code: u16,
}

/// The object a [`Status`] is about, and the causes of its failure.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// Name of the object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Kind of the object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// One entry per offending field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// One reason a request failed, usually one invalid field.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusCause {
    /// Machine-readable, e.g. `FieldValueInvalid`.
    #[serde(default)]
    pub reason: String,
    /// What is wrong with the field.
    #[serde(default)]
    pub message: String,
    /// Dotted path of the offending field, e.g. `spec.replicas`.
    #[serde(default)]
    pub field: String,
}

impl Status {
    /// A `Failure` with the given HTTP code, reason and message.
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: serde_json::json!({}),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            details: None,
            code,
        }
    }
}
