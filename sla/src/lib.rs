//! Oakestra SLA import, this crate's one concern: an Oakestra deployment descriptor (an
//! SLA, `sla_version: v2.0`) mapped to the Namespaces and Services that run the same
//! applications here. Pure: no IO; the caller reads the file, names it in messages and
//! applies or prints the result. `oakctl` (`apply`, `diff`, `convert`) and the root's
//! Oakestra API (`POST /api/application/`) both map through it.
//!
//! The mapping, field by field, is the table of `docs/oakestra.md`. In short:
//! - an application's `application_namespace` becomes a Namespace, each of its
//!   microservices a Service in it (Oakestra's four-part job name and the original
//!   mixed-case names kept as labels and annotations);
//! - names are lower-cased by [`kube_name`]: a name with upper-case letters gets a
//!   short hash of the original appended, so `Web` and `web` never meet;
//! - what the mapping has no field for is kept in annotations (`oakestra.io/sla-extra`
//!   and friends), never dropped; what cannot run here is refused.
//!
//! Every problem of a file is reported at once ([`convert`] returns them all), each an
//! [`SlaError`] naming the application, the microservice and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crds::ipam::Cidr;
use crds::{
    Addressing, EnvVar, GeoConstraint, LatencyConstraint, Namespace, ObjectMeta, Placement,
    Protocol, Resources, RestartPolicy, RuntimeKind, Service, ServicePort, ServiceSpec, Workload,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The SLA versions this import reads.
pub const SUPPORTED_VERSIONS: &[&str] = &["v2.0"];
/// Oakestra's service range, and the root's default `--service-cidr`.
pub const DEFAULT_SERVICE_CIDR: &str = "10.30.0.0/16";
/// The node label a direct `node` constraint selects on (its value: the host name).
pub use crds::HOSTNAME_LABEL;

/// Label: the application's original name.
pub const LABEL_APPLICATION: &str = "oakestra.io/application";
/// Label: the application's original namespace.
pub const LABEL_APPLICATION_NAMESPACE: &str = "oakestra.io/application-namespace";
/// Label: the microservice's original name.
pub const LABEL_MICROSERVICE: &str = "oakestra.io/microservice";
/// Label: the microservice's original namespace.
pub const LABEL_MICROSERVICE_NAMESPACE: &str = "oakestra.io/microservice-namespace";
/// Annotation: Oakestra's job name, `app.appns.service.servicens` (too long for a label).
pub const ANNOTATION_JOB_NAME: &str = "oakestra.io/job-name";
/// Annotation: the SLA fields the mapping has no place for, as JSON.
pub const ANNOTATION_EXTRA: &str = "oakestra.io/sla-extra";
/// Annotation: the microservice's `constraints`, as written (JSON).
pub const ANNOTATION_CONSTRAINTS: &str = "oakestra.io/constraints";
/// Annotation: the microservice's `connectivity`, as written (JSON).
pub const ANNOTATION_CONNECTIVITY: &str = "oakestra.io/connectivity";
/// Annotation: the add-ons an `addons` constraint needs (JSON list).
pub const ANNOTATION_ADDONS: &str = "oakestra.io/addons";
/// Annotation: `true` when the SLA asked for a privileged container.
pub const ANNOTATION_PRIVILEGED: &str = "oakestra.io/privileged";
/// Annotation: what the SLA asked for that is kept but not acted on, comma-separated.
pub const ANNOTATION_NOT_ENFORCED: &str = "oakestra.io/not-enforced";

/// What the import is told besides the SLA.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `rr_ip` and `closest_ip` must be (the root refuses others).
    pub service_cidr: Cidr,
    /// Replicas of each Service: 1, or 0 for "registered, not deployed" (as Oakestra
    /// has a service before `deploy`).
    pub replicas: i32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            service_cidr: DEFAULT_SERVICE_CIDR.parse().expect("a valid CIDR"),
            replicas: 1,
        }
    }
}

/// Why an SLA (or one microservice of it) was refused: where, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaError {
    /// The application, as `"name"` or, without a usable name, `#N` (1-based).
    pub application: Option<String>,
    /// The microservice, the same way.
    pub microservice: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

impl std::fmt::Display for SlaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope: Vec<String> = [
            ("application", &self.application),
            ("microservice", &self.microservice),
        ]
        .into_iter()
        .filter_map(|(what, who)| who.as_ref().map(|who| format!("{what} {who}")))
        .collect();
        if scope.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", scope.join(", "), self.problem)
        }
    }
}

impl std::error::Error for SlaError {}

/// What is wrong with an SLA; `field` is the path inside the application or the
/// microservice, e.g. `addresses.rr_ip` or `constraints[0].location`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// The file is `{}`.
    #[error("the SLA is an empty object: sla_version, customerID and applications are required")]
    Empty,
    /// A required field is absent.
    #[error("{field}: required")]
    Missing {
        /// The field.
        field: String,
    },
    /// A field has the wrong JSON type.
    #[error("{field}: must be {expected}, not {found}")]
    WrongType {
        /// The field.
        field: String,
        /// What it must be, e.g. `a string`.
        expected: &'static str,
        /// What it is, e.g. `the number 4`.
        found: String,
    },
    /// `sla_version` is not one this import reads.
    #[error("sla_version {version:?} is not supported (supported: {})", SUPPORTED_VERSIONS.join(", "))]
    Version {
        /// The version written.
        version: String,
    },
    /// A name Oakestra would refuse (`^[a-zA-Z0-9]{1,30}$`).
    #[error(
        "{field} {value:?} is not a valid Oakestra name: 1 to 30 letters and digits, nothing else"
    )]
    BadName {
        /// The field.
        field: String,
        /// The name written.
        value: String,
    },
    /// A value this project cannot run (yet).
    #[error("{field} {value:?} is not supported (supported: {supported})")]
    Unsupported {
        /// The field.
        field: String,
        /// The value written.
        value: String,
        /// What is.
        supported: &'static str,
    },
    /// A value that does not mean anything.
    #[error("{field} {value:?}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// The value written.
        value: String,
        /// Why not.
        reason: String,
    },
    /// A service IP outside the service range (the root refuses it, as Oakestra's does).
    #[error("{field} {ip} is outside the service range {cidr} (Oakestra's root refuses it too)")]
    OutsideServiceRange {
        /// The field.
        field: String,
        /// The address written.
        ip: Ipv4Addr,
        /// The range.
        cidr: Cidr,
    },
    /// Two microservices would become the same Service.
    #[error("its Service {namespace}/{name} would also be that of {other} (two Oakestra names map to one name here; rename one)")]
    Collision {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
        /// The other microservice's job name.
        other: String,
    },
}

/// The objects an SLA maps to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Converted {
    /// One per application namespace, in the order of first use.
    pub namespaces: Vec<Namespace>,
    /// One per microservice, in the SLA's order.
    pub services: Vec<Service>,
}

impl Converted {
    /// Every object as JSON: the Namespaces first, then the Services.
    pub fn objects(&self) -> Vec<Value> {
        let namespaces = self.namespaces.iter().map(serde_json::to_value);
        let services = self.services.iter().map(serde_json::to_value);
        namespaces.chain(services).filter_map(Result::ok).collect()
    }
}

/// Whether a document is an Oakestra SLA rather than a manifest: an object with
/// `sla_version` or `applications` and neither `apiVersion` nor `kind`.
pub fn is_sla(value: &Value) -> bool {
    value.as_object().is_some_and(|o| {
        !o.contains_key("apiVersion")
            && !o.contains_key("kind")
            && (o.contains_key("sla_version") || o.contains_key("applications"))
    })
}

/// The name here of an Oakestra name: itself when it has no upper-case letter, else
/// lower-cased with `-` and 8 hex digits of the SHA-256 of the original appended
/// (`Web` → `web-<hash>`). Oakestra names have no `-`, so a name of the second kind
/// never equals one of the first, and `Web` and `WEB` get different hashes.
pub fn kube_name(original: &str) -> String {
    if !original.bytes().any(|b| b.is_ascii_uppercase()) {
        return original.to_string();
    }
    let digest = Sha256::digest(original.as_bytes());
    let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{suffix}", original.to_ascii_lowercase())
}

/// Oakestra's `port` string, `host[:container][/tcp|udp]` separated by `;`, as ports:
/// a single number is published on the node at the same port (as Oakestra's network
/// manager does), the protocol is `tcp` unless `/udp`.
pub fn parse_ports(spec: &str) -> Result<Vec<ServicePort>, String> {
    let mut ports: Vec<ServicePort> = Vec::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (mapping, protocol) = match entry.split_once('/') {
            None => (entry, Protocol::Tcp),
            Some((m, p)) if p.eq_ignore_ascii_case("tcp") => (m, Protocol::Tcp),
            Some((m, p)) if p.eq_ignore_ascii_case("udp") => (m, Protocol::Udp),
            Some((_, p)) => return Err(format!("protocol {p:?} in {entry:?}: use tcp or udp")),
        };
        let number = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{s:?} in {entry:?} is not a port (1..=65535)")),
            }
        };
        let (host, container) = match mapping.split_once(':') {
            Some((h, c)) => (number(h)?, number(c)?),
            None => {
                let n = number(mapping)?;
                (n, n)
            }
        };
        if ports
            .iter()
            .any(|p| p.container_port == container && p.protocol == protocol)
        {
            return Err(format!(
                "container port {container} is mapped twice: one host port per container port and protocol"
            ));
        }
        ports.push(ServicePort {
            container_port: container,
            host_port: Some(host),
            protocol,
        });
    }
    Ok(ports)
}

/// Map an SLA to Namespaces and Services, or say everything wrong with it.
pub fn convert(sla: &Value, options: &Options) -> Result<Converted, Vec<SlaError>> {
    let mut errors = Vec::new();
    let top = |problem| SlaError {
        application: None,
        microservice: None,
        problem,
    };
    let Some(root) = sla.as_object() else {
        return Err(vec![top(Problem::WrongType {
            field: "the SLA".into(),
            expected: "a JSON object",
            found: describe(sla),
        })]);
    };
    if root.is_empty() {
        return Err(vec![top(Problem::Empty)]);
    }
    let mut problems = Vec::new();
    match string(root, "sla_version", &mut problems) {
        None if problems.is_empty() => problems.push(missing("sla_version")),
        Some(v) if !SUPPORTED_VERSIONS.contains(&v) => problems.push(Problem::Version {
            version: v.to_string(),
        }),
        _ => {}
    }
    let applications = required_array(root, "applications", &mut problems);
    errors.extend(problems.into_iter().map(top));
    let mut top_extra = root.clone();
    top_extra.remove("applications");

    let mut out = Converted::default();
    let mut namespaces: BTreeMap<String, (String, Map<String, Value>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut taken: BTreeMap<(String, String), String> = BTreeMap::new();
    for (i, app) in applications.iter().enumerate() {
        let mut scope = SlaError {
            application: Some(format!("#{}", i + 1)),
            microservice: None,
            problem: Problem::Empty,
        };
        let Some(app) = app.as_object() else {
            scope.problem = wrong("the application", "an object", app);
            errors.push(scope);
            continue;
        };
        let mut problems = Vec::new();
        let app_name = name(app, "application_name", None, &mut problems);
        if let Some(n) = &app_name {
            scope.application = Some(format!("{n:?}"));
        }
        // Without a usable name, an absent namespace is not worth a second message.
        let fallback = app_name
            .as_deref()
            .or(Some("").filter(|_| !problems.is_empty()));
        let app_ns = name(app, "application_namespace", fallback, &mut problems);
        let microservices = match app.get("microservices") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(m)) => m.as_slice(),
            Some(other) => {
                problems.push(wrong("microservices", "an array", other));
                &[][..]
            }
        };
        let failed = !problems.is_empty();
        errors.extend(problems.into_iter().map(|problem| SlaError {
            problem,
            ..scope.clone()
        }));
        let (Some(app_name), Some(app_ns)) = (app_name, app_ns) else {
            continue;
        };
        if failed {
            continue;
        }
        let ns = kube_name(&app_ns);
        let entry = namespaces.entry(ns.clone()).or_insert_with(|| {
            order.push(ns.clone());
            (app_ns.clone(), Map::new())
        });
        let app_extra = kept(
            app,
            &["application_name", "application_namespace", "microservices"],
        );
        entry.1.insert(app_name.clone(), Value::Object(app_extra));
        let app = App {
            name: &app_name,
            namespace: &app_ns,
            kube_namespace: &ns,
        };
        for (j, svc) in microservices.iter().enumerate() {
            let mut scope = SlaError {
                microservice: Some(format!("#{}", j + 1)),
                ..scope.clone()
            };
            match microservice(&app, svc, options) {
                Ok(service) => {
                    let key = (ns.clone(), service.metadata.name.clone());
                    let job = service.metadata.annotations[ANNOTATION_JOB_NAME].clone();
                    scope.microservice =
                        Some(format!("{:?}", service.metadata.labels[LABEL_MICROSERVICE]));
                    if let Some(other) = taken.get(&key) {
                        scope.problem = Problem::Collision {
                            namespace: key.0,
                            name: key.1,
                            other: other.clone(),
                        };
                        errors.push(scope);
                        continue;
                    }
                    taken.insert(key, job);
                    out.services.push(service);
                }
                Err((label, problems)) => {
                    if let Some(l) = label {
                        scope.microservice = Some(format!("{l:?}"));
                    }
                    errors.extend(problems.into_iter().map(|problem| SlaError {
                        problem,
                        ..scope.clone()
                    }));
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for ns in order {
        let Some((original, apps)) = namespaces.remove(&ns) else {
            continue;
        };
        let mut extra = top_extra.clone();
        extra.insert("applications".into(), Value::Object(apps));
        let mut metadata = ObjectMeta {
            name: ns,
            ..Default::default()
        };
        metadata
            .labels
            .insert(LABEL_APPLICATION_NAMESPACE.into(), original);
        metadata
            .annotations
            .insert(ANNOTATION_EXTRA.into(), Value::Object(extra).to_string());
        out.namespaces.push(Namespace {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            metadata,
            spec: None,
            status: None,
        });
    }
    Ok(out)
}

/// The application a microservice belongs to.
struct App<'a> {
    name: &'a str,
    namespace: &'a str,
    kube_namespace: &'a str,
}

/// The microservice's fields the mapping reads; the others go to `oakestra.io/sla-extra`.
const MAPPED: &[&str] = &[
    "microservice_name",
    "microservice_namespace",
    "virtualization",
    "code",
    "cmd",
    "environment",
    "vcpus",
    "memory",
    "vgpus",
    "storage",
    "port",
    "one_shot",
    "privileged",
    "addresses",
    "constraints",
    "connectivity",
];

/// One microservice as a Service, or its name (when it has a usable one) and problems.
fn microservice(
    app: &App,
    svc: &Value,
    options: &Options,
) -> Result<Service, (Option<String>, Vec<Problem>)> {
    let Some(svc) = svc.as_object() else {
        return Err((None, vec![wrong("the microservice", "an object", svc)]));
    };
    let mut p = Vec::new();
    let name = name(svc, "microservice_name", None, &mut p);
    let namespace = name_or(svc, "microservice_namespace", app.namespace, &mut p);

    let mut template = Workload::default();
    match required(svc, "virtualization", &mut p) {
        Some("container" | "docker") => template.runtime = RuntimeKind::Container,
        Some(other) => p.push(Problem::Unsupported {
            field: "virtualization".into(),
            value: other.into(),
            supported: "container, docker",
        }),
        None => {}
    }
    match required(svc, "code", &mut p).map(str::trim) {
        Some("") => p.push(Problem::Invalid {
            field: "code".into(),
            value: String::new(),
            reason: "the image reference must not be empty".into(),
        }),
        Some(image) => template.image = Some(image.to_string()),
        None => {}
    }
    template.command = strings(svc, "cmd", &mut p);
    template.env = environment(&strings(svc, "environment", &mut p), &mut p);
    template.resources = Resources {
        cpu_millicores: number(svc, "vcpus", &mut p)
            .map(|v| (v * 1000.0).round() as u64)
            .unwrap_or_default(),
        memory_mib: whole(svc, "memory", &mut p).unwrap_or_default(),
        gpus: whole(svc, "vgpus", &mut p)
            .map(|g| u32::try_from(g).unwrap_or(u32::MAX))
            .unwrap_or_default(),
        storage_mib: whole(svc, "storage", &mut p).unwrap_or_default(),
    };
    match svc.get("port") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let text = match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                other => {
                    p.push(wrong("port", "a string like \"8080:80/tcp;53/udp\"", other));
                    None
                }
            };
            if let Some(text) = text {
                match parse_ports(&text) {
                    Ok(ports) => template.ports = ports,
                    Err(reason) => p.push(Problem::Invalid {
                        field: "port".into(),
                        value: text,
                        reason,
                    }),
                }
            }
        }
    }
    if boolean(svc, "one_shot", &mut p) {
        template.restart_policy = RestartPolicy::Never;
    }
    let privileged = boolean(svc, "privileged", &mut p);
    let (addressing, address_extra) = addresses(svc.get("addresses"), options, &mut p);
    let constraints = list(svc, "constraints", &mut p);
    let found = placement(constraints, &mut p);
    template.placement = found.placement;
    let connectivity = list(svc, "connectivity", &mut p);
    check_connectivity(connectivity, &mut p);

    let (Some(name), Some(namespace)) = (name, namespace) else {
        return Err((None, p));
    };
    if !p.is_empty() {
        return Err((Some(name), p));
    }

    let mut service = Service::new(
        &kube_name(&name),
        ServiceSpec {
            replicas: options.replicas,
            addressing,
            template,
        },
    );
    let meta = &mut service.metadata;
    meta.namespace = Some(app.kube_namespace.to_string());
    for (key, value) in [
        (LABEL_APPLICATION, app.name),
        (LABEL_APPLICATION_NAMESPACE, app.namespace),
        (LABEL_MICROSERVICE, &name),
        (LABEL_MICROSERVICE_NAMESPACE, &namespace),
    ] {
        meta.labels.insert(key.into(), value.into());
    }
    let job = format!("{}.{}.{name}.{namespace}", app.name, app.namespace);
    meta.annotations.insert(ANNOTATION_JOB_NAME.into(), job);
    let mut extra = kept(svc, MAPPED);
    if !address_extra.is_empty() {
        extra.insert("addresses".into(), Value::Object(address_extra));
    }
    let mut notes = BTreeMap::new();
    if !extra.is_empty() {
        notes.insert(ANNOTATION_EXTRA, Value::Object(extra).to_string());
    }
    if !constraints.is_empty() {
        notes.insert(ANNOTATION_CONSTRAINTS, json_text(constraints));
    }
    if !connectivity.is_empty() {
        notes.insert(ANNOTATION_CONNECTIVITY, json_text(connectivity));
    }
    if !found.addons.is_empty() {
        notes.insert(ANNOTATION_ADDONS, json_text(&found.addons));
    }
    if privileged {
        notes.insert(ANNOTATION_PRIVILEGED, "true".into());
    }
    let mut not_enforced = Vec::new();
    for (what, asked) in [
        ("latency", found.latency),
        ("addons", !found.addons.is_empty()),
        ("connectivity", !connectivity.is_empty()),
        ("privileged", privileged),
    ] {
        if asked {
            not_enforced.push(what);
        }
    }
    if !not_enforced.is_empty() {
        notes.insert(ANNOTATION_NOT_ENFORCED, not_enforced.join(", "));
    }
    meta.annotations
        .extend(notes.into_iter().map(|(k, v)| (k.to_string(), v)));
    Ok(service)
}

/// What the constraints say.
#[derive(Default)]
struct Found {
    placement: Placement,
    addons: Vec<String>,
    /// Whether any latency constraint was given (kept, not enforced).
    latency: bool,
}

/// `constraints` as placement: `direct` (clusters and one node), `clusters`
/// (`allowed`), `geo` (one), `latency` (one in `placement.latency`; all kept),
/// `addons` (kept). Cluster lists narrow each other; other types are kept only.
fn placement(constraints: &[Value], p: &mut Vec<Problem>) -> Found {
    let mut found = Found::default();
    let mut clusters: Option<BTreeSet<String>> = None;
    let mut narrow = |list: BTreeSet<String>, field: String, p: &mut Vec<Problem>| {
        let next: BTreeSet<String> = match &clusters {
            None => list.clone(),
            Some(before) => before.intersection(&list).cloned().collect(),
        };
        if next.is_empty() {
            p.push(Problem::Invalid {
                field,
                value: list.into_iter().collect::<Vec<_>>().join(";"),
                reason: "no cluster is left that all cluster constraints allow".into(),
            });
        }
        clusters = Some(next);
    };
    let mut latencies = Vec::new();
    for (k, c) in constraints.iter().enumerate() {
        let at = |f: &str| format!("constraints[{k}].{f}");
        let Some(c) = c.as_object() else {
            p.push(wrong(&format!("constraints[{k}]"), "an object", c));
            continue;
        };
        let mut q = Vec::new();
        match required(c, "type", &mut q).unwrap_or_default() {
            "direct" => {
                if let Some(list) = string(c, "cluster", &mut q).map(semicolons) {
                    if !list.is_empty() {
                        narrow(list, at("cluster"), p);
                    }
                }
                if let Some(nodes) = string(c, "node", &mut q) {
                    let list = semicolons(nodes);
                    let mut nodes_iter = list.iter();
                    match (nodes_iter.next(), nodes_iter.next()) {
                        (None, _) => {}
                        (Some(node), None) => {
                            let before = found
                                .placement
                                .node_selector
                                .insert(HOSTNAME_LABEL.into(), node.clone());
                            if before.is_some_and(|b| &b != node) {
                                q.push(Problem::Invalid {
                                    field: "node".into(),
                                    value: nodes.into(),
                                    reason: "another direct constraint names another node".into(),
                                });
                            }
                        }
                        (Some(_), Some(_)) => q.push(Problem::Unsupported {
                            field: "node".into(),
                            value: nodes.into(),
                            supported: "one node; for several, give them a common label and use spec.template.placement.nodeSelector",
                        }),
                    }
                }
            }
            "clusters" => {
                let allowed = strings(c, "allowed", &mut q);
                if allowed.is_empty() && q.is_empty() {
                    q.push(missing("allowed"));
                }
                let list: BTreeSet<String> = allowed
                    .iter()
                    .map(|a| a.trim().to_ascii_lowercase())
                    .filter(|a| !a.is_empty())
                    .collect();
                if !list.is_empty() {
                    narrow(list, at("allowed"), p);
                }
            }
            "geo" => {
                let location = required(c, "location", &mut q);
                let km = required_number(c, "threshold", &mut q);
                let (Some(l), Some(km)) = (location, km) else {
                    p.extend(
                        q.into_iter()
                            .map(|e| within(e, &format!("constraints[{k}]"))),
                    );
                    continue;
                };
                match lat_long(l) {
                    Some(_) if found.placement.geo.is_some() => q.push(Problem::Unsupported {
                        field: "type".into(),
                        value: "geo".into(),
                        supported: "one geo constraint per microservice",
                    }),
                    Some((latitude, longitude)) => {
                        found.placement.geo = Some(GeoConstraint {
                            latitude,
                            longitude,
                            max_distance_km: km,
                        })
                    }
                    None => q.push(Problem::Invalid {
                        field: "location".into(),
                        value: l.into(),
                        reason: "must be \"latitude,longitude\" in degrees, e.g. \"48.13,11.58\""
                            .into(),
                    }),
                }
            }
            "latency" => {
                found.latency = true;
                let area = required(c, "area", &mut q);
                let ms = required_number(c, "threshold", &mut q);
                if let (Some(area), Some(ms)) = (area, ms) {
                    latencies.push(LatencyConstraint {
                        target: area.to_string(),
                        max_ms: ms.round().min(f64::from(u32::MAX)) as u32,
                    });
                }
            }
            "addons" => found.addons.extend(strings(c, "needs", &mut q)),
            _ => {} // Oakestra ignores other types; kept in `oakestra.io/constraints`.
        }
        p.extend(
            q.into_iter()
                .map(|e| within(e, &format!("constraints[{k}]"))),
        );
    }
    if latencies.len() == 1 {
        found.placement.latency = latencies.pop();
    }
    found.placement.clusters = clusters.unwrap_or_default().into_iter().collect();
    found
}

/// Refuse what Oakestra's schema refuses in `connectivity`: entries need
/// `target_microservice_id` and `con_constraints`, whose entries need `type`,
/// `threshold`, `rigidness` and `convergence_time`.
fn check_connectivity(connectivity: &[Value], p: &mut Vec<Problem>) {
    for (k, entry) in connectivity.iter().enumerate() {
        let at = format!("connectivity[{k}]");
        let Some(entry) = entry.as_object() else {
            p.push(wrong(&at, "an object", entry));
            continue;
        };
        if !entry.contains_key("target_microservice_id") {
            p.push(missing(&format!("{at}.target_microservice_id")));
        }
        let mut q = Vec::new();
        let constraints = required_array(entry, "con_constraints", &mut q);
        for (m, c) in constraints.iter().enumerate() {
            let inner = format!("con_constraints[{m}]");
            let Some(c) = c.as_object() else {
                q.push(wrong(&inner, "an object", c));
                continue;
            };
            let mut r = Vec::new();
            required(c, "type", &mut r);
            for field in ["threshold", "rigidness", "convergence_time"] {
                required_number(c, field, &mut r);
            }
            q.extend(r.into_iter().map(|e| within(e, &inner)));
        }
        p.extend(q.into_iter().map(|e| within(e, &at)));
    }
}

/// `addresses.rr_ip` and `closest_ip` (IPv4, inside the service range), and what else
/// `addresses` holds (kept).
fn addresses(
    value: Option<&Value>,
    options: &Options,
    p: &mut Vec<Problem>,
) -> (Addressing, Map<String, Value>) {
    let mut addressing = Addressing::default();
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return (addressing, Map::new());
    };
    let Some(o) = value.as_object() else {
        p.push(wrong("addresses", "an object", value));
        return (addressing, Map::new());
    };
    let mut q = Vec::new();
    for (field, slot) in [
        ("rr_ip", &mut addressing.round_robin_ip),
        ("closest_ip", &mut addressing.closest_ip),
    ] {
        let Some(text) = string(o, field, &mut q).filter(|t| !t.is_empty()) else {
            continue;
        };
        match text.parse::<Ipv4Addr>() {
            Ok(ip) if options.service_cidr.contains(ip) => *slot = Some(ip),
            Ok(ip) => q.push(Problem::OutsideServiceRange {
                field: field.into(),
                ip,
                cidr: options.service_cidr,
            }),
            Err(_) => q.push(Problem::Invalid {
                field: field.into(),
                value: text.into(),
                reason: "not an IPv4 address".into(),
            }),
        }
    }
    p.extend(q.into_iter().map(|e| within(e, "addresses")));
    (addressing, kept(o, &["rr_ip", "closest_ip"]))
}

/// `KEY=value` strings as variables; a string without `=` or a key given twice is refused.
fn environment(entries: &[String], p: &mut Vec<Problem>) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = Vec::new();
    for (k, entry) in entries.iter().enumerate() {
        let field = format!("environment[{k}]");
        let reason = match entry.split_once('=') {
            None => "must be KEY=value",
            Some(("", _)) => "the name before '=' must not be empty",
            Some((name, _)) if env.iter().any(|e| e.name == name) => "this variable is set twice",
            Some((name, value)) => {
                env.push(EnvVar {
                    name: name.into(),
                    value: value.into(),
                    value_from: None,
                });
                continue;
            }
        };
        p.push(Problem::Invalid {
            field,
            value: entry.clone(),
            reason: reason.into(),
        });
    }
    env
}

/// `"lat,long"` in degrees, within range.
fn lat_long(text: &str) -> Option<(f64, f64)> {
    let (lat, long) = text.split_once(',')?;
    let lat: f64 = lat.trim().parse().ok()?;
    let long: f64 = long.trim().parse().ok()?;
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&long)).then_some((lat, long))
}

/// A `;`-separated list, trimmed and lower-cased (names here are lower-case).
fn semicolons(text: &str) -> BTreeSet<String> {
    text.split(';')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// An Oakestra name at `field`, checked; `fallback` when absent (else required).
fn name(
    o: &Map<String, Value>,
    field: &str,
    fallback: Option<&str>,
    p: &mut Vec<Problem>,
) -> Option<String> {
    match (o.get(field), fallback) {
        (None, Some(f)) => Some(f.to_string()),
        (None, None) => {
            p.push(missing(field));
            None
        }
        (Some(Value::String(s)), _) if valid_name(s) => Some(s.clone()),
        (Some(Value::String(s)), _) => {
            p.push(Problem::BadName {
                field: field.into(),
                value: s.clone(),
            });
            None
        }
        (Some(other), _) => {
            p.push(wrong(
                field,
                "a string of 1 to 30 letters and digits",
                other,
            ));
            None
        }
    }
}

/// [`name`] with a fallback that is always there.
fn name_or(
    o: &Map<String, Value>,
    field: &str,
    fallback: &str,
    p: &mut Vec<Problem>,
) -> Option<String> {
    name(o, field, Some(fallback), p)
}

/// Oakestra's `^[a-zA-Z0-9]{1,30}$`.
fn valid_name(s: &str) -> bool {
    (1..=30).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The string at `field`, if there is one (a wrong type is a problem).
fn string<'a>(o: &'a Map<String, Value>, field: &str, p: &mut Vec<Problem>) -> Option<&'a str> {
    match o.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            p.push(wrong(field, "a string", other));
            None
        }
    }
}

/// The string at `field`, which must be there.
fn required<'a>(o: &'a Map<String, Value>, field: &str, p: &mut Vec<Problem>) -> Option<&'a str> {
    if o.get(field).is_none_or(Value::is_null) {
        p.push(missing(field));
    }
    string(o, field, p)
}

/// The number at `field`, which must be there.
fn required_number(o: &Map<String, Value>, field: &str, p: &mut Vec<Problem>) -> Option<f64> {
    if o.get(field).is_none_or(Value::is_null) {
        p.push(missing(field));
    }
    number(o, field, p)
}

/// The array of strings at `field` (empty when absent).
fn strings(o: &Map<String, Value>, field: &str, p: &mut Vec<Problem>) -> Vec<String> {
    let items = list(o, field, p);
    let texts: Option<Vec<String>> = items.iter().map(|v| v.as_str().map(String::from)).collect();
    texts.unwrap_or_else(|| {
        p.push(Problem::WrongType {
            field: field.into(),
            expected: "an array of strings",
            found: "an array holding something else".into(),
        });
        Vec::new()
    })
}

/// The array at `field` (empty when absent).
fn list<'a>(o: &'a Map<String, Value>, field: &str, p: &mut Vec<Problem>) -> &'a [Value] {
    match o.get(field) {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(other) => {
            p.push(wrong(field, "an array", other));
            &[]
        }
    }
}

/// The non-negative number at `field`.
fn number(o: &Map<String, Value>, field: &str, p: &mut Vec<Problem>) -> Option<f64> {
    match o.get(field) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(n) if n >= 0.0 => Some(n),
            _ => {
                p.push(wrong(field, "a number >= 0", v));
                None
            }
        },
    }
}

/// The non-negative whole number at `field`.
fn whole(o: &Map<String, Value>, field: &str, p: &mut Vec<Problem>) -> Option<u64> {
    match o.get(field) {
        None | Some(Value::Null) => None,
        Some(v) => v.as_u64().or_else(|| {
            p.push(wrong(field, "a whole number >= 0", v));
            None
        }),
    }
}

/// The boolean at `field` (false when absent).
fn boolean(o: &Map<String, Value>, field: &str, p: &mut Vec<Problem>) -> bool {
    match o.get(field) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            p.push(wrong(field, "true or false", other));
            false
        }
    }
}

/// The fields of `o` other than `used` that carry something (not `""`, `[]`, `{}`,
/// `0`, `false` or `null`, which say "the default").
fn kept(o: &Map<String, Value>, used: &[&str]) -> Map<String, Value> {
    o.iter()
        .filter(|(k, _)| !used.contains(&k.as_str()))
        .filter(|(_, v)| !is_default(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The array `field` of `object`; empty, with the problem recorded, when it is missing
/// or not an array.
fn required_array<'v>(
    object: &'v serde_json::Map<String, Value>,
    field: &str,
    problems: &mut Vec<Problem>,
) -> &'v [Value] {
    match object.get(field) {
        None => {
            problems.push(missing(field));
            &[]
        }
        Some(Value::Array(a)) => a.as_slice(),
        Some(other) => {
            problems.push(wrong(field, "an array", other));
            &[]
        }
    }
}

fn missing(field: &str) -> Problem {
    Problem::Missing {
        field: field.into(),
    }
}

fn wrong(field: &str, expected: &'static str, found: &Value) -> Problem {
    Problem::WrongType {
        field: field.into(),
        expected,
        found: describe(found),
    }
}

/// A JSON value in words: `the number 4`, `an array`, …
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// `problem` with its field put under `parent` (`location` → `constraints[0].location`).
fn within(problem: Problem, parent: &str) -> Problem {
    let nest = |f: String| format!("{parent}.{f}");
    match problem {
        Problem::Missing { field } => Problem::Missing { field: nest(field) },
        Problem::WrongType {
            field,
            expected,
            found,
        } => Problem::WrongType {
            field: nest(field),
            expected,
            found,
        },
        Problem::BadName { field, value } => Problem::BadName {
            field: nest(field),
            value,
        },
        Problem::Unsupported {
            field,
            value,
            supported,
        } => Problem::Unsupported {
            field: nest(field),
            value,
            supported,
        },
        Problem::Invalid {
            field,
            value,
            reason,
        } => Problem::Invalid {
            field: nest(field),
            value,
            reason,
        },
        Problem::OutsideServiceRange { field, ip, cidr } => Problem::OutsideServiceRange {
            field: nest(field),
            ip,
            cidr,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An SLA of one application `app` (namespace `ns`) with these microservices.
    fn sla(microservices: Value) -> Value {
        json!({"sla_version": "v2.0", "customerID": "Admin", "applications": [{
            "applicationID": "", "application_name": "app", "application_namespace": "ns",
            "application_desc": "d", "microservices": microservices}]})
    }

    /// A container microservice `web` with `fields` added.
    fn svc(fields: Value) -> Value {
        let mut s = json!({"microserviceID": "", "microservice_name": "web",
            "microservice_namespace": "ns", "virtualization": "container",
            "code": "docker.io/library/nginx"});
        if let (Some(s), Some(f)) = (s.as_object_mut(), fields.as_object()) {
            s.extend(f.clone());
        }
        s
    }

    fn messages(sla: &Value) -> Vec<String> {
        match convert(sla, &Options::default()) {
            Ok(c) => panic!("converted: {:?}", c.objects()),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn names_are_lowered_without_collisions() {
        let cases = [
            ("web", "web"),
            ("web1", "web1"),
            ("Web", "web-"),
            ("WEB", "web-"),
            ("MicroA4", "microa4-"),
        ];
        for (original, prefix) in cases {
            let name = kube_name(original);
            assert!(name.starts_with(prefix), "{original} → {name}");
            assert_eq!(name == original, original == prefix, "{original} → {name}");
            assert!(crds::validate::name(&name).is_ok(), "{name}");
            assert_eq!(kube_name(original), name, "stable");
        }
        let all: BTreeSet<String> = ["web", "Web", "WEB", "wEb"].map(kube_name).into();
        assert_eq!(all.len(), 4, "{all:?}");
    }

    #[test]
    fn port_strings() {
        let tcp = |c, h| ServicePort {
            container_port: c,
            host_port: Some(h),
            protocol: Protocol::Tcp,
        };
        let udp = |c, h| ServicePort {
            protocol: Protocol::Udp,
            ..tcp(c, h)
        };
        let cases: Vec<(&str, Result<Vec<ServicePort>, &str>)> = vec![
            ("80", Ok(vec![tcp(80, 80)])),
            ("6080:60/tcp", Ok(vec![tcp(60, 6080)])),
            ("8080:80;53/udp", Ok(vec![tcp(80, 8080), udp(53, 53)])),
            ("53:53/UDP;53:53/tcp;", Ok(vec![udp(53, 53), tcp(53, 53)])),
            ("", Ok(vec![])),
            ("80/sctp", Err("protocol \"sctp\"")),
            ("0", Err("is not a port")),
            ("70000:80", Err("is not a port")),
            ("http", Err("is not a port")),
            ("80:80;81:80", Err("mapped twice")),
        ];
        for (spec, expected) in cases {
            match (parse_ports(spec), expected) {
                (Ok(ports), Ok(want)) => assert_eq!(ports, want, "{spec}"),
                (Err(e), Err(want)) => assert!(e.contains(want), "{spec}: {e}"),
                (got, want) => panic!("{spec}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn fields_map_to_the_service() {
        /// What, the microservice's extra fields, and (JSON pointer into the Service, value).
        type Case = (&'static str, Value, Vec<(&'static str, Value)>);
        let cases: Vec<Case> = vec![
            (
                "names, labels, job name, defaults",
                json!({}),
                vec![
                    ("/metadata/name", json!("web")),
                    ("/metadata/namespace", json!("ns")),
                    ("/metadata/labels/oakestra.io~1application", json!("app")),
                    (
                        "/metadata/annotations/oakestra.io~1job-name",
                        json!("app.ns.web.ns"),
                    ),
                    ("/spec/replicas", json!(1)),
                    ("/spec/template/runtime", json!("container")),
                    ("/spec/template/image", json!("docker.io/library/nginx")),
                    ("/spec/template/restartPolicy", json!("Always")),
                    ("/metadata/annotations/oakestra.io~1sla-extra", Value::Null),
                ],
            ),
            (
                "mixed case keeps the original in labels",
                json!({"microservice_name": "Web", "microservice_namespace": "Prod"}),
                vec![
                    ("/metadata/name", json!(kube_name("Web"))),
                    ("/metadata/labels/oakestra.io~1microservice", json!("Web")),
                    (
                        "/metadata/labels/oakestra.io~1microservice-namespace",
                        json!("Prod"),
                    ),
                    (
                        "/metadata/annotations/oakestra.io~1job-name",
                        json!("app.ns.Web.Prod"),
                    ),
                ],
            ),
            (
                "resources, command, environment, one_shot, docker",
                json!({"virtualization": "docker", "vcpus": 1.5, "memory": 256, "vgpus": 1,
                    "storage": 10, "cmd": ["sh", "-c", "x"], "environment": ["A=1", "B=x=y"],
                    "one_shot": true}),
                vec![
                    ("/spec/template/resources/cpuMillicores", json!(1500)),
                    ("/spec/template/resources/memoryMiB", json!(256)),
                    ("/spec/template/resources/gpus", json!(1)),
                    ("/spec/template/resources/storageMiB", json!(10)),
                    ("/spec/template/command", json!(["sh", "-c", "x"])),
                    (
                        "/spec/template/env",
                        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}]),
                    ),
                    ("/spec/template/restartPolicy", json!("Never")),
                ],
            ),
            (
                "ports and addresses",
                json!({"port": "6080:60/tcp", "addresses": {"rr_ip": "10.30.1.2", "closest_ip": "10.30.1.3", "rr_ip_v6": "fdff::1"}}),
                vec![
                    (
                        "/spec/template/ports",
                        json!([{"containerPort": 60, "hostPort": 6080, "protocol": "tcp"}]),
                    ),
                    (
                        "/spec/addressing",
                        json!({"roundRobinIP": "10.30.1.2", "closestIP": "10.30.1.3"}),
                    ),
                    (
                        "/metadata/annotations/oakestra.io~1sla-extra",
                        json!(r#"{"addresses":{"rr_ip_v6":"fdff::1"}}"#),
                    ),
                ],
            ),
            (
                "direct, clusters (intersected) and geo constraints",
                json!({"constraints": [
                    {"type": "direct", "cluster": "A;b", "node": "Xavier1"},
                    {"type": "clusters", "allowed": ["a", "c"]},
                    {"type": "geo", "location": "48.1,11.5", "threshold": 50}]}),
                vec![
                    ("/spec/template/placement/clusters", json!(["a"])),
                    (
                        "/spec/template/placement/nodeSelector",
                        json!({HOSTNAME_LABEL: "xavier1"}),
                    ),
                    (
                        "/spec/template/placement/geo",
                        json!({"latitude": 48.1, "longitude": 11.5, "maxDistanceKm": 50.0}),
                    ),
                    (
                        "/metadata/annotations/oakestra.io~1not-enforced",
                        Value::Null,
                    ),
                ],
            ),
            (
                "latency, addons, connectivity and privileged are kept, said not enforced",
                json!({"privileged": true, "constraints": [
                    {"type": "latency", "area": "munich-1", "threshold": 100, "rigidness": 0.99},
                    {"type": "addons", "needs": ["gpu-driver"]}],
                    "connectivity": [{"target_microservice_id": "1", "con_constraints": []}]}),
                vec![
                    (
                        "/spec/template/placement/latency",
                        json!({"target": "munich-1", "maxMs": 100}),
                    ),
                    (
                        "/metadata/annotations/oakestra.io~1addons",
                        json!(r#"["gpu-driver"]"#),
                    ),
                    (
                        "/metadata/annotations/oakestra.io~1privileged",
                        json!("true"),
                    ),
                    (
                        "/metadata/annotations/oakestra.io~1not-enforced",
                        json!("latency, addons, connectivity, privileged"),
                    ),
                    (
                        "/metadata/annotations/oakestra.io~1connectivity",
                        json!(r#"[{"con_constraints":[],"target_microservice_id":"1"}]"#),
                    ),
                ],
            ),
            (
                "two latency constraints: kept, none in placement",
                json!({"constraints": [
                    {"type": "latency", "area": "munich-1", "threshold": 100},
                    {"type": "latency", "area": "berlin-1", "threshold": 100}]}),
                vec![("/spec/template/placement/latency", Value::Null)],
            ),
            (
                "unmapped fields are kept, defaults are not",
                json!({"vtpus": 0, "bandwidth_in": 10, "state": "", "added_files": ["f"], "sla_violation_strategy": "x"}),
                vec![(
                    "/metadata/annotations/oakestra.io~1sla-extra",
                    json!(
                        r#"{"added_files":["f"],"bandwidth_in":10,"sla_violation_strategy":"x"}"#
                    ),
                )],
            ),
        ];
        for (what, fields, expected) in cases {
            let converted = convert(&sla(json!([svc(fields)])), &Options::default())
                .unwrap_or_else(|e| {
                    panic!(
                        "{what}: {:?}",
                        e.iter().map(ToString::to_string).collect::<Vec<_>>()
                    )
                });
            let service = serde_json::to_value(&converted.services[0]).unwrap();
            for (pointer, value) in expected {
                let got = service.pointer(pointer).cloned().unwrap_or(Value::Null);
                assert_eq!(got, value, "{what}: {pointer}");
            }
        }
    }

    #[test]
    fn applications_become_namespaces() {
        let two = json!({"sla_version": "v2.0", "applications": [
            {"application_name": "a", "application_namespace": "Test", "microservices": [svc(json!({}))]},
            {"application_name": "b", "application_namespace": "Test", "microservices": []},
            {"application_name": "c", "microservices": []}]});
        let converted = convert(&two, &Options::default()).unwrap();
        let names: Vec<&str> = converted
            .namespaces
            .iter()
            .map(|n| n.metadata.name.as_str())
            .collect();
        assert_eq!(
            names,
            [kube_name("Test").as_str(), "c"],
            "one per namespace; the name when none"
        );
        let extra = &converted.namespaces[0].metadata.annotations[ANNOTATION_EXTRA];
        assert_eq!(
            extra,
            r#"{"applications":{"a":{},"b":{}},"sla_version":"v2.0"}"#
        );
        assert_eq!(
            converted.services[0].metadata.namespace.as_deref(),
            Some(names[0])
        );
        let objects = converted.objects();
        assert_eq!(objects[0]["kind"], "Namespace");
        assert_eq!(
            objects.last().map(|o| o["kind"].clone()),
            Some(json!("Service"))
        );

        let none = Options {
            replicas: 0,
            ..Options::default()
        };
        let registered = convert(&sla(json!([svc(json!({}))])), &none).unwrap();
        assert_eq!(registered.services[0].spec.replicas, 0);
    }

    #[test]
    fn refusals_name_application_microservice_and_field() {
        let scope = "application \"app\", microservice \"web\": ";
        let cases: Vec<(&str, Value, Vec<String>)> = vec![
            ("empty object", json!({}), vec!["the SLA is an empty object: sla_version, customerID and applications are required".into()]),
            ("not an object", json!([1]), vec!["the SLA: must be a JSON object, not an array".into()]),
            ("missing sla_version", json!({"api_version": "v0.3.0", "applications": []}), vec!["sla_version: required".into()]),
            ("other version", json!({"sla_version": "v1.0", "applications": []}), vec!["sla_version \"v1.0\" is not supported (supported: v2.0)".into()]),
            ("numeric service name", sla(json!([svc(json!({"microservice_name": 4}))])),
                vec!["application \"app\", microservice #1: microservice_name: must be a string of 1 to 30 letters and digits, not the number 4".into()]),
            ("dotted service name", sla(json!([svc(json!({"microservice_name": "test.special.char"}))])),
                vec!["application \"app\", microservice #1: microservice_name \"test.special.char\" is not a valid Oakestra name: 1 to 30 letters and digits, nothing else".into()]),
            ("bad application name", json!({"sla_version": "v2.0", "applications": [{"application_name": "Example Application", "microservices": []}]}),
                vec!["application #1: application_name \"Example Application\" is not a valid Oakestra name: 1 to 30 letters and digits, nothing else".into()]),
            ("unikernel", sla(json!([svc(json!({"virtualization": "unikernel"}))])),
                vec![format!("{scope}virtualization \"unikernel\" is not supported (supported: container, docker)")]),
            ("no code", sla(json!([{"microservice_name": "web", "virtualization": "container"}])), vec![format!("{scope}code: required")]),
            ("rr_ip outside", sla(json!([svc(json!({"addresses": {"rr_ip": "192.168.178.4"}}))])),
                vec![format!("{scope}addresses.rr_ip 192.168.178.4 is outside the service range 10.30.0.0/16 (Oakestra's root refuses it too)")]),
            ("connectivity without type", sla(json!([svc(json!({"connectivity": [{"target_microservice_id": "2",
                "con_constraints": [{"threshold": 50, "rigidness": 0.9, "convergence_time": 300}]}]}))])),
                vec![format!("{scope}connectivity[0].con_constraints[0].type: required")]),
            ("constraint without type", sla(json!([svc(json!({"constraints": [{"area": "x"}]}))])), vec![format!("{scope}constraints[0].type: required")]),
            ("several nodes", sla(json!([svc(json!({"constraints": [{"type": "direct", "node": "a;b"}]}))])),
                vec![format!("{scope}constraints[0].node \"a;b\" is not supported (supported: one node; for several, give them a common label and use spec.template.placement.nodeSelector)")]),
            ("bad geo", sla(json!([svc(json!({"constraints": [{"type": "geo", "location": "north", "threshold": 5}]}))])),
                vec![format!("{scope}constraints[0].location \"north\": must be \"latitude,longitude\" in degrees, e.g. \"48.13,11.58\"")]),
            ("bad environment", sla(json!([svc(json!({"environment": ["A"]}))])), vec![format!("{scope}environment[0] \"A\": must be KEY=value")]),
            ("bad port", sla(json!([svc(json!({"port": "80/sctp"}))])), vec![format!("{scope}port \"80/sctp\": protocol \"sctp\" in \"80/sctp\": use tcp or udp")]),
            ("collision", sla(json!([svc(json!({})), svc(json!({"microservice_namespace": "other"}))])),
                vec![format!("{scope}its Service ns/web would also be that of app.ns.web.ns (two Oakestra names map to one name here; rename one)")]),
            ("every problem at once", sla(json!([svc(json!({"virtualization": "crosvm", "memory": -1}))])),
                vec![format!("{scope}virtualization \"crosvm\" is not supported (supported: container, docker)"),
                     format!("{scope}memory: must be a whole number >= 0, not the number -1")]),
        ];
        for (what, input, expected) in cases {
            assert_eq!(messages(&input), expected, "{what}");
        }
    }

    #[test]
    fn slas_are_told_from_manifests() {
        let cases = [
            (json!({"sla_version": "v2.0"}), true),
            (json!({"applications": []}), true),
            (json!({}), false),
            (
                json!({"apiVersion": "v1", "kind": "Namespace", "applications": []}),
                false,
            ),
            (json!([]), false),
        ];
        for (value, expected) in cases {
            assert_eq!(is_sla(&value), expected, "{value}");
        }
    }
}
