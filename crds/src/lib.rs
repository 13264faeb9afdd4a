//! Resource types of the `oakestra.io/v1` API, their JSON schemas and their validation.
//!
//! This crate owns *what an object is*: the typed structs users and controllers
//! exchange, the table of served kinds (plural names, scope, short names), the
//! schemas generated from the structs with `schemars`, and the validation every write
//! goes through. It performs no IO, so every other crate can depend on it.
//!
//! Modules:
//! - [`types`]: the spec and status structs of each kind (and `Lease`, `Endpoints`);
//! - [`meta`]: `ObjectMeta`, owner references and the `Status` error body;
//! - [`conditions`]: `Condition`, the condition types and reasons shared between tiers,
//!   and the helpers to read and set them;
//! - [`validate`]: schema walk and per-kind rules, errors naming the field path;
//! - [`table`]: the text of table cells and ages, as `get` prints them;
//! - [`ipam`]: CIDR arithmetic for the subnet and address pools.
//!
//! The crate root holds the object structs (`Cluster`, `Node`, `Service`, `Instance`,
//! `Event`, `Namespace`, `ConfigMap`, `Secret`), the [`Resource`] trait and [`KINDS`], the table of served kinds.

pub mod conditions;
pub mod ipam;
pub mod meta;
pub mod table;
pub mod types;
pub mod validate;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub use conditions::{
    find_condition, find_with_status, is_false, is_true, set_condition, since_transition,
    Condition, ConditionStatus,
};
pub use meta::*;
pub use table::{age, column_value};
pub use types::*;
pub use validate::{FieldError, ValidationError};

/// API group of the Oakestra kinds.
pub const GROUP: &str = "oakestra.io";
/// The only served version.
pub const VERSION: &str = "v1";
/// `apiVersion` of the Oakestra kinds.
pub const API_VERSION: &str = "oakestra.io/v1";
/// The label every Node carries with its own name (Kubernetes' well-known label, as
/// kubelet sets it): node selectors, and Oakestra SLAs' `direct` node constraints,
/// name a node by it.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The leader-election Lease of the root's controllers: of several `oakestra root`
/// processes sharing one store, only its holder runs them.
pub const ROOT_CONTROLLERS_LEASE: &str = "oakestra-root-controllers";
/// The leader-election Lease of a cluster's controllers (in the cluster's own API).
pub const CLUSTER_CONTROLLERS_LEASE: &str = "oakestra-cluster-controllers";
/// The names of the leader-election Leases ([`ROOT_CONTROLLERS_LEASE`],
/// [`CLUSTER_CONTROLLERS_LEASE`]). They are no node's Lease: the node lifecycle never
/// deletes them, and no node or cluster identity may write them.
pub const LEADER_LEASES: [&str; 2] = [ROOT_CONTROLLERS_LEASE, CLUSTER_CONTROLLERS_LEASE];

/// Whether the Lease `name` is one of the [`LEADER_LEASES`].
pub fn is_leader_lease(name: &str) -> bool {
    LEADER_LEASES.contains(&name)
}

/// Static facts about a served kind.
#[derive(Debug)]
pub struct KindInfo {
    /// API group; empty for the core group (`Namespace`).
    pub group: &'static str,
    /// API version within the group (`v1`).
    pub version: &'static str,
    /// The kind's name, e.g. `Service`.
    pub kind: &'static str,
    /// Lower-case plural, as in URL paths: `services`.
    pub plural: &'static str,
    /// Lower-case singular, accepted by the CLIs: `service`.
    pub singular: &'static str,
    /// Abbreviations accepted by the CLIs: `svc`.
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace (else they are cluster-scoped).
    pub namespaced: bool,
    /// Whether the kind has a `status` written through the `/status` subresource.
    pub has_status: bool,
    /// Writes of this kind may be acknowledged before they are on disk (the embedded
    /// store makes them durable within a second): records their writers repeat anyway,
    /// node Leases and Events (as Kubernetes treats Events as best-effort), and
    /// `Endpoints`, which their controllers derive again from the Instances at start.
    pub best_effort: bool,
    /// Fields that cannot change after creation, as JSON pointers.
    pub immutable: &'static [&'static str],
    /// Table columns `(header, JSON pointer)` shown by `get`, after NAME.
    pub columns: &'static [(&'static str, &'static str)],
    /// More columns shown by `get -o wide`.
    pub wide_columns: &'static [(&'static str, &'static str)],
    validate: fn(&serde_json::Value) -> Result<serde_json::Value, ValidationError>,
    schema: fn() -> &'static schemars::Schema,
}

impl KindInfo {
    /// `apiVersion` string of this kind (`oakestra.io/v1`, or `v1` for core).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Validate a whole object (as JSON) of this kind: types, unknown fields, and
    /// semantic rules. Errors name the field path. Returns the object with defaults.
    pub fn validate(
        &self,
        object: &serde_json::Value,
    ) -> Result<serde_json::Value, ValidationError> {
        (self.validate)(object)
    }

    /// The JSON schema of the whole object (generated once per kind: every write's
    /// validation walks it).
    pub fn schema(&self) -> &'static schemars::Schema {
        (self.schema)()
    }

    /// Whether `name` refers to this kind: kind, plural, singular or a short name,
    /// case-insensitively (as kubectl resolves them).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let name = name.split('.').next().unwrap_or_default();
        name == self.plural
            || name == self.singular
            || name == self.kind.to_ascii_lowercase()
            || self.short_names.contains(&name)
    }
}

/// A typed object of a served kind.
pub trait Resource:
    Serialize + DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static
{
    /// The kind's name, e.g. `Service`.
    const KIND: &'static str;
    /// The kind's entry in [`KINDS`].
    fn info() -> &'static KindInfo {
        kind_by_name(Self::KIND).expect("every Resource is in KINDS")
    }
    /// The object's metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// The object's metadata, to change.
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// Kind-specific rules beyond what the schema expresses.
    fn check(&self, _errors: &mut Vec<FieldError>) {}
}

macro_rules! resource {
    ($(#[$doc:meta])* $name:ident, spec: $spec:ty, status: $status:ty) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// `oakestra.io/v1`.
            pub api_version: String,
            /// The kind's name.
            pub kind: String,
            /// Name, namespace, labels and server-owned fields.
            #[serde(default)]
            pub metadata: ObjectMeta,
            /// The desired state, written by users (or by the controller that owns the object).
            pub spec: $spec,
            /// The observed state, written by controllers through the `status` subresource.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
        }

        impl $name {
            /// A new object with the given name and spec and no status.
            pub fn new(name: &str, spec: $spec) -> Self {
                $name {
                    api_version: API_VERSION.to_string(),
                    kind: stringify!($name).to_string(),
                    metadata: ObjectMeta { name: name.to_string(), ..Default::default() },
                    spec,
                    status: None,
                }
            }
        }

        impl HasConditions for $name {
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
            }
        }
    };
}

/// A kind whose status carries conditions.
pub trait HasConditions {
    /// The status conditions (empty without a status).
    fn conditions(&self) -> &[Condition];
}

resource!(
    /// An edge cluster as the root sees it: one aggregated resource.
    Cluster, spec: ClusterSpec, status: ClusterStatus);
resource!(
    /// A worker machine of a cluster.
    Node, spec: NodeSpec, status: NodeStatus);
resource!(
    /// A replicated workload: the user's desired state.
    Service, spec: ServiceSpec, status: ServiceStatus);
resource!(
    /// One replica of a Service, placed on a cluster and bound to a node.
    Instance, spec: InstanceSpec, status: InstanceStatus);

/// Something that happened to an object, recorded by a controller.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `oakestra.io/v1`.
    pub api_version: String,
    /// `Event`.
    pub kind: String,
    /// Name, namespace (the involved object's) and server-owned fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The object the Event is about.
    pub involved_object: ObjectReference,
    /// One CamelCase word, e.g. `Placed` or `FailedPlacement`.
    pub reason: String,
    /// What happened, for a person.
    #[serde(default)]
    pub message: String,
    /// `Normal` or `Warning`.
    #[serde(default, rename = "type")]
    pub type_: EventType,
    /// How often it happened (repeats of the same reason and message are counted).
    #[serde(default = "one_u32")]
    pub count: u32,
    /// When it first happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<Time>,
    /// When it last happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<Time>,
    /// Component that recorded the event.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

fn one_u32() -> u32 {
    1
}

/// A namespace (core group `v1`): the scope of Services, Instances and Events.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    /// `v1`.
    pub api_version: String,
    /// `Namespace`.
    pub kind: String,
    /// Name and server-owned fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Finalizers, accepted for Kubernetes clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<NamespaceSpec>,
    /// The phase, set by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NamespaceStatus>,
}

/// What a client declares about a Namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct NamespaceSpec {
    /// Accepted for compatibility with Kubernetes clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

/// What the server reports about a Namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct NamespaceStatus {
    /// `Active` or `Terminating`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// Configuration for workloads (core group `v1`): keys and values an Instance's
/// environment can take (`env[].valueFrom.configMapKeyRef`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    /// `v1`.
    pub api_version: String,
    /// `ConfigMap`.
    pub kind: String,
    /// Name, namespace, labels and server-owned fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Keys and their text values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Keys and their binary values, base64-encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
    /// When true, `data` and `binaryData` can no longer change (delete and create the
    /// object again instead), and `immutable` cannot be unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// Confidential configuration for workloads (core group `v1`): values that an
/// Instance's environment can take (`env[].valueFrom.secretKeyRef`). Only
/// administrators, and the clusters and nodes whose Instances use it, may read one.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// `v1`.
    pub api_version: String,
    /// `Secret`.
    pub kind: String,
    /// Name, namespace, labels and server-owned fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Keys and their values, base64-encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Keys and their values as plain text, for writing only: the server merges them
    /// into `data` (they win over `data`'s keys) and never stores or returns them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    /// What the Secret holds, for tools (`Opaque` by default); cannot change.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// When true, `data` can no longer change, and `immutable` cannot be unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

macro_rules! impl_resource {
    ($name:ident $(, $check:item)?) => {
        impl Resource for $name {
            const KIND: &'static str = stringify!($name);
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            $($check)?
        }
    };
}

impl_resource!(
    Cluster,
    fn check(&self, errors: &mut Vec<FieldError>) {
        if let Some(l) = &self.spec.location {
            validate::location(l, "spec.location", errors);
        }
    }
);
impl_resource!(
    Node,
    fn check(&self, errors: &mut Vec<FieldError>) {
        if let Some(l) = &self.spec.location {
            validate::location(l, "spec.location", errors);
        }
    }
);
impl_resource!(
    Service,
    fn check(&self, errors: &mut Vec<FieldError>) {
        if self.spec.replicas < 0 {
            errors.push(FieldError::new("spec.replicas", "must be >= 0"));
        }
        let addressing = &self.spec.addressing;
        if addressing.closest_ip.is_some() && addressing.closest_ip == addressing.round_robin_ip {
            errors.push(FieldError::new(
                "spec.addressing.closestIP",
                "must differ from roundRobinIP (each routes its own way)",
            ));
        }
        validate::workload(&self.spec.template, "spec.template", errors);
    }
);
impl_resource!(
    Instance,
    fn check(&self, errors: &mut Vec<FieldError>) {
        if self.spec.service.is_empty() {
            errors.push(FieldError::new(
                "spec.service",
                "must name the owning Service",
            ));
        }
        validate::workload(&self.spec.template, "spec.template", errors);
    }
);
impl_resource!(Event);
impl_resource!(Lease);
impl_resource!(Endpoints);
impl_resource!(Namespace);
impl_resource!(
    ConfigMap,
    fn check(&self, errors: &mut Vec<FieldError>) {
        validate::config_keys(self.data.keys(), "data", errors);
        validate::config_keys(self.binary_data.keys(), "binaryData", errors);
        for (key, value) in &self.binary_data {
            validate::base64_value(value, &format!("binaryData[{key}]"), errors);
        }
        for key in self
            .data
            .keys()
            .filter(|k| self.binary_data.contains_key(*k))
        {
            errors.push(FieldError::new(
                format!("binaryData[{key}]"),
                "duplicate of a key in data",
            ));
        }
    }
);
impl_resource!(
    Secret,
    fn check(&self, errors: &mut Vec<FieldError>) {
        validate::config_keys(self.data.keys(), "data", errors);
        validate::config_keys(self.string_data.keys(), "stringData", errors);
        for (key, value) in &self.data {
            validate::base64_value(value, &format!("data[{key}]"), errors);
        }
    }
);

const NO_COLUMNS: &[(&str, &str)] = &[];

/// A function returning `T`'s schema, generated on first use.
macro_rules! schema_of {
    ($t:ty) => {
        || {
            static SCHEMA: std::sync::OnceLock<schemars::Schema> = std::sync::OnceLock::new();
            SCHEMA.get_or_init(|| schemars::schema_for!($t))
        }
    };
}

/// Every kind the API serves.
pub static KINDS: &[KindInfo] = &[
    KindInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
        has_status: false,
        best_effort: false,
        immutable: &[],
        columns: NO_COLUMNS,
        wide_columns: NO_COLUMNS,
        validate: validate::object::<Namespace>,
        schema: schema_of!(Namespace),
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        namespaced: true,
        has_status: false,
        best_effort: false,
        immutable: &[],
        columns: &[("DATA", "/data")],
        wide_columns: NO_COLUMNS,
        validate: validate::object::<ConfigMap>,
        schema: schema_of!(ConfigMap),
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        namespaced: true,
        has_status: false,
        best_effort: false,
        immutable: &["/type"],
        columns: &[("TYPE", "/type"), ("DATA", "/data")],
        wide_columns: NO_COLUMNS,
        validate: validate::object::<Secret>,
        schema: schema_of!(Secret),
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Cluster",
        plural: "clusters",
        singular: "cluster",
        short_names: &["cl"],
        namespaced: false,
        has_status: true,
        best_effort: false,
        immutable: &[],
        columns: &[
            ("READY", "/status/conditions/Ready"),
            ("SUBNET", "/status/subnet"),
            ("NODES", "/status/capacity/nodes"),
            ("CPU(m)", "/status/allocatable/cpuMillicores"),
            ("MEMORY(MiB)", "/status/allocatable/memoryMiB"),
        ],
        wide_columns: &[
            ("LATITUDE", "/spec/location/latitude"),
            ("LONGITUDE", "/spec/location/longitude"),
            ("HEARTBEAT", "/status/lastHeartbeat"),
        ],
        validate: validate::object::<Cluster>,
        schema: schema_of!(Cluster),
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        namespaced: false,
        has_status: true,
        best_effort: false,
        immutable: &[],
        columns: &[
            ("READY", "/status/conditions/Ready"),
            ("ADDRESS", "/spec/address"),
            ("SUBNET", "/status/subnet"),
            ("CPU(m)", "/status/allocatable/cpuMillicores"),
            ("MEMORY(MiB)", "/status/allocatable/memoryMiB"),
        ],
        wide_columns: &[
            ("RUNTIMES", "/spec/runtimes"),
            ("UNSCHEDULABLE", "/spec/unschedulable"),
            ("REPORTED", "/status/lastHeartbeat"),
        ],
        validate: validate::object::<Node>,
        schema: schema_of!(Node),
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
        has_status: true,
        best_effort: false,
        immutable: &[],
        columns: &[
            ("RUNTIME", "/spec/template/runtime"),
            ("REPLICAS", "/spec/replicas"),
            ("READY", "/status/readyReplicas"),
            ("SERVICE-IP", "/status/serviceIP"),
        ],
        wide_columns: &[
            ("ENDPOINTS", "/status/readyEndpoints"),
            ("IMAGE", "/spec/template/image"),
            ("EXECUTABLE", "/spec/template/executable"),
        ],
        validate: validate::object::<Service>,
        schema: schema_of!(Service),
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Instance",
        plural: "instances",
        singular: "instance",
        short_names: &["inst"],
        namespaced: true,
        has_status: true,
        best_effort: false,
        immutable: &["/spec/service", "/spec/ordinal"],
        columns: &[
            ("SERVICE", "/spec/service"),
            ("PHASE", "/status/phase"),
            ("CLUSTER", "/spec/cluster"),
            ("NODE", "/spec/node"),
        ],
        wide_columns: &[
            ("IP", "/status/instanceIP"),
            ("RESTARTS", "/status/restartCount"),
            ("REASON", "/status/reason"),
        ],
        validate: validate::object::<Instance>,
        schema: schema_of!(Instance),
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        has_status: false,
        best_effort: true,
        immutable: &["/involvedObject"],
        columns: &[
            ("TYPE", "/type"),
            ("REASON", "/reason"),
            ("OBJECT", "/involvedObject/name"),
            ("COUNT", "/count"),
            ("MESSAGE", "/message"),
        ],
        wide_columns: &[("SOURCE", "/source"), ("LAST", "/lastTimestamp")],
        validate: validate::object::<Event>,
        schema: schema_of!(Event),
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        namespaced: false,
        has_status: false,
        best_effort: true,
        immutable: &[],
        columns: &[
            ("HOLDER", "/spec/holderIdentity"),
            ("TRANSITIONS", "/spec/leaseTransitions"),
            ("RENEWED", "/spec/renewTime"),
        ],
        wide_columns: &[
            ("DURATION", "/spec/leaseDurationSeconds"),
            ("ACQUIRED", "/spec/acquireTime"),
        ],
        validate: validate::object::<Lease>,
        schema: schema_of!(Lease),
    },
    KindInfo {
        group: GROUP,
        version: VERSION,
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        namespaced: true,
        has_status: false,
        best_effort: true,
        immutable: &[],
        columns: &[
            ("ROUND-ROBIN-IP", "/spec/roundRobinIP"),
            ("CLOSEST-IP", "/spec/closestIP"),
            ("ENDPOINTS", "/spec/endpoints/*/ip"),
        ],
        wide_columns: &[("NODES", "/spec/endpoints/*/node")],
        validate: validate::object::<Endpoints>,
        schema: schema_of!(Endpoints),
    },
];

/// Look a kind up by kind name, plural, singular or short name.
pub fn kind_by_name(name: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.matches(name))
}

/// Look a kind up by `apiVersion` and `kind`, as written in a manifest.
pub fn kind_by_gvk(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_version() == api_version)
}
