//! Our objects in the shapes of Oakestra's root API, as pure functions: which
//! applications the Namespaces and Services make up, their ids, and the JSON of an
//! application, a service (with its `instance_list`), an instance's status and a
//! cluster (with Oakestra's legacy field names). No IO: the handlers read the objects
//! and call these.

use std::collections::BTreeMap;

use crds::conditions::reason as reasons;
use crds::{
    find_condition, Cluster, ConditionStatus, Instance, Namespace, Phase, RuntimeKind, Service,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sla::{
    ANNOTATION_EXTRA, ANNOTATION_JOB_NAME, LABEL_APPLICATION, LABEL_APPLICATION_NAMESPACE,
    LABEL_MICROSERVICE, LABEL_MICROSERVICE_NAMESPACE,
};

/// The one user here, as Oakestra's `userId` and `customerID`.
pub const USER: &str = "admin";

/// An Oakestra application: the Services of one `oakestra.io/application` in one
/// Namespace, plus the record of it the SLA import left on the Namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// [`app_id`] of the Namespace's uid and the name.
    pub id: String,
    /// `application_name`, as written (mixed case kept).
    pub name: String,
    /// `application_namespace`, as written.
    pub namespace: String,
    /// The Namespace here.
    pub kube_namespace: String,
    /// `application_desc`, if the SLA had one.
    pub desc: String,
    /// Its Services' names, in name order.
    pub services: Vec<String>,
}

/// The id of application `name` in the Namespace with uid `namespace_uid`: 24 hex
/// digits (the length of Oakestra's ids) of a SHA-256, so it is the same after a
/// restart and differs for a Namespace deleted and made again.
pub fn app_id(namespace_uid: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace_uid}/{name}").as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The application records the SLA import keeps on a Namespace (the `applications`
/// object of its `oakestra.io/sla-extra`), by application name.
pub fn records(namespace: &Namespace) -> Map<String, Value> {
    namespace
        .metadata
        .annotations
        .get(ANNOTATION_EXTRA)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|extra| {
            extra
                .get("applications")
                .and_then(Value::as_object)
                .cloned()
        })
        .unwrap_or_default()
}

/// `namespace`'s `oakestra.io/sla-extra` with its application records replaced by
/// `apps` (the other fields kept).
pub fn with_records(namespace: &Namespace, apps: Map<String, Value>) -> String {
    let mut extra = namespace
        .metadata
        .annotations
        .get(ANNOTATION_EXTRA)
        .and_then(|text| serde_json::from_str::<Map<String, Value>>(text).ok())
        .unwrap_or_default();
    extra.insert("applications".into(), Value::Object(apps));
    Value::Object(extra).to_string()
}

/// The applications that `namespaces` (those the SLA import made: labelled
/// `oakestra.io/application-namespace`) and `services` make up: one per record on a
/// Namespace and per application label on a Service, ordered by namespace and name.
pub fn applications(namespaces: &[Namespace], services: &[Service]) -> Vec<App> {
    let mut apps: BTreeMap<(String, String), App> = BTreeMap::new();
    for ns in namespaces {
        let Some(original) = ns.metadata.labels.get(LABEL_APPLICATION_NAMESPACE) else {
            continue;
        };
        let uid = ns.metadata.uid.clone().unwrap_or_default();
        let key = |name: &str| (ns.metadata.name.clone(), name.to_string());
        let new = |name: &str| App {
            id: app_id(&uid, name),
            name: name.to_string(),
            namespace: original.clone(),
            kube_namespace: ns.metadata.name.clone(),
            desc: String::new(),
            services: Vec::new(),
        };
        for (name, record) in records(ns) {
            let app = apps.entry(key(&name)).or_insert_with(|| new(&name));
            if let Some(desc) = record.get("application_desc").and_then(Value::as_str) {
                app.desc = desc.to_string();
            }
        }
        for svc in services {
            let namespace = svc.metadata.namespace.as_deref().unwrap_or_default();
            let Some(name) = svc.metadata.labels.get(LABEL_APPLICATION) else {
                continue;
            };
            if namespace != ns.metadata.name {
                continue;
            }
            let app = apps.entry(key(name)).or_insert_with(|| new(name));
            app.services.push(svc.metadata.name.clone());
        }
    }
    apps.into_values().collect()
}

/// An application in Oakestra's shape; `services` are its Services' ids.
pub fn application_json(app: &App, services: &[String]) -> Value {
    json!({
        "_id": {"$oid": app.id},
        "applicationID": app.id,
        "application_name": app.name,
        "application_namespace": app.namespace,
        "application_desc": app.desc,
        "userId": USER,
        "microservices": services,
    })
}

/// The id of a Service: its uid.
pub fn service_id(service: &Service) -> String {
    service.metadata.uid.clone().unwrap_or_default()
}

/// Oakestra's name of a runtime (`virtualization`; Oakestra stores `container` as
/// `docker`).
pub fn virtualization(runtime: RuntimeKind) -> &'static str {
    match runtime {
        RuntimeKind::Container => "docker",
        RuntimeKind::Process => "process",
        RuntimeKind::Unikernel => "unikernel",
    }
}

/// An instance's status in Oakestra's names (those of `oakestra_utils`, which the
/// `oak` CLI knows), and what it is in our terms (`status_detail`).
pub fn instance_status(instance: &Instance) -> (&'static str, String) {
    let status = instance.status.clone().unwrap_or_default();
    let detail = |reason: &str, message: &str| match (reason.is_empty(), message.is_empty()) {
        (true, true) => format!("{:?}", status.phase),
        (false, true) => reason.to_string(),
        (true, false) => message.to_string(),
        (false, false) => format!("{reason}: {message}"),
    };
    if instance.metadata.deletion_timestamp.is_some() || status.phase == Phase::Terminating {
        return ("UNDEPLOYED", "Terminating".into());
    }
    let own = detail(&status.reason, &status.message);
    match status.phase {
        Phase::Running => return ("RUNNING", own),
        Phase::Succeeded => return ("COMPLETED", own),
        Phase::Failed => return ("FAILED", own),
        Phase::Starting => return ("CREATING", own),
        Phase::Scheduled => return ("NODE_SCHEDULED", own),
        Phase::Pending | Phase::Terminating => {}
    }
    if let Some(c) = find_condition(&status.conditions, crds::conditions::SCHEDULED)
        .filter(|c| c.status == ConditionStatus::False)
    {
        let name = match c.reason.as_str() {
            reasons::NO_RESOURCES_AVAILABLE => "NoActiveClusterWithCapacity",
            reasons::NO_TARGET_CLUSTER => "TargetClusterNotFound",
            reasons::NO_TARGET_NODE => "NO_QUALIFIED_WORKER_FOUND",
            _ => "NO_NODE_FOUND",
        };
        return (name, detail(&c.reason, &c.message));
    }
    if instance.spec.cluster.is_some() {
        return ("CLUSTER_SCHEDULED", own);
    }
    ("REQUESTED", own)
}

/// One entry of a service's `instance_list`.
pub fn instance_json(instance: &Instance) -> Value {
    let (status, detail) = instance_status(instance);
    let s = instance.status.clone().unwrap_or_default();
    json!({
        "instance_number": instance.spec.ordinal,
        "instance_name": instance.metadata.name,
        "status": status,
        "status_detail": detail,
        "publicip": s.host_ip.unwrap_or_default(),
        "instance_ip": s.instance_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        "cluster_id": instance.spec.cluster.clone().unwrap_or_default(),
        "worker_id": instance.spec.node.clone().unwrap_or_default(),
        "cpu_history": [],
        "memory_history": [],
        "logs": "",
    })
}

/// Oakestra's `port` string of a Service's ports (`host:container/proto;…`).
fn port_string(service: &Service) -> String {
    let ports: Vec<String> = service
        .spec
        .template
        .ports
        .iter()
        .map(|p| {
            let proto = match p.protocol {
                crds::Protocol::Tcp => "tcp",
                crds::Protocol::Udp => "udp",
            };
            match p.host_port {
                Some(h) => format!("{h}:{}/{proto}", p.container_port),
                None => format!("{}/{proto}", p.container_port),
            }
        })
        .collect();
    ports.join(";")
}

/// A service in Oakestra's shape, with its application's id and its `instances`
/// (those not being deleted go in `instance_list`, by number). Its `status` is
/// `RUNNING` when one instance runs, else the first instance's; none without instances.
pub fn service_json(service: &Service, app_id: &str, instances: &[&Instance]) -> Value {
    let meta = &service.metadata;
    let label = |key: &str| meta.labels.get(key).cloned().unwrap_or_default();
    let mut listed: Vec<&Instance> = instances
        .iter()
        .copied()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .collect();
    listed.sort_by_key(|i| i.spec.ordinal);
    let list: Vec<Value> = listed.iter().map(|i| instance_json(i)).collect();
    let statuses: Vec<&'static str> = listed.iter().map(|i| instance_status(i).0).collect();
    let status = statuses
        .iter()
        .find(|s| **s == "RUNNING")
        .or(statuses.first())
        .copied();
    let t = &service.spec.template;
    let mut cmd = t.command.clone();
    cmd.extend(t.args.iter().cloned());
    let rr_ip = service
        .spec
        .addressing
        .round_robin_ip
        .or(service.status.as_ref().and_then(|s| s.service_ip))
        .map(|ip| ip.to_string());
    let mut out = json!({
        "_id": {"$oid": service_id(service)},
        "microserviceID": service_id(service),
        "microservice_name": label(LABEL_MICROSERVICE),
        "microservice_namespace": label(LABEL_MICROSERVICE_NAMESPACE),
        "service_name": label(LABEL_MICROSERVICE),
        "service_ns": label(LABEL_MICROSERVICE_NAMESPACE),
        "app_name": label(LABEL_APPLICATION),
        "app_ns": label(LABEL_APPLICATION_NAMESPACE),
        "applicationID": app_id,
        "job_name": meta.annotations.get(ANNOTATION_JOB_NAME).cloned().unwrap_or_default(),
        "image": t.image.clone().or(t.executable.clone()).unwrap_or_default(),
        "virtualization": virtualization(t.runtime),
        "cmd": cmd,
        "memory": t.resources.memory_mib,
        "vcpus": t.resources.cpu_millicores as f64 / 1000.0,
        "vgpus": t.resources.gpus,
        "storage": t.resources.storage_mib,
        "port": port_string(service),
        "RR_ip": rr_ip,
        "replicas": service.spec.replicas,
        "next_instance_progressive_number": service.spec.replicas,
        "instance_list": list,
        "namespace": meta.namespace,
        "name": meta.name,
    });
    if let (Some(status), Some(o)) = (status, out.as_object_mut()) {
        o.insert("status".into(), status.into());
    }
    out
}

/// A cluster in the shape of Oakestra's `/api/clusters/`: the candidate's fields and
/// the legacy names Oakestra maps them to (`cluster_name`, `cluster_location`,
/// `total_cpu_cores`, `memory_in_mb`, …).
pub fn cluster_json(cluster: &Cluster) -> Value {
    let status = cluster.status.clone().unwrap_or_default();
    let capacity = status.capacity.clone().unwrap_or_default();
    let allocatable = status.allocatable.clone().unwrap_or_default();
    let active = crds::is_true(&status.conditions, crds::conditions::READY);
    let location = cluster
        .spec
        .location
        .as_ref()
        .map(|l| format!("{},{}", l.latitude, l.longitude))
        .unwrap_or_else(|| "Unknown Location".into());
    let cores = capacity.cpu_millicores as f64 / 1000.0;
    let cpu_percent = if capacity.cpu_millicores == 0 {
        0.0
    } else {
        let used = capacity
            .cpu_millicores
            .saturating_sub(allocatable.cpu_millicores);
        100.0 * used as f64 / capacity.cpu_millicores as f64
    };
    let runtimes: Vec<&str> = status.runtimes.iter().map(|r| virtualization(*r)).collect();
    let heartbeat = status.last_heartbeat.map(|t| t.timestamp());
    json!({
        "_id": {"$oid": cluster.metadata.uid.clone().unwrap_or_default()},
        "candidate_name": cluster.metadata.name,
        "cluster_name": cluster.metadata.name,
        "candidate_location": location,
        "cluster_location": location,
        "active": active,
        "active_nodes": capacity.nodes,
        "virtualization": runtimes,
        "cpu_percent": cpu_percent,
        "aggregated_cpu_percent": cpu_percent,
        "vcpus": cores,
        "total_cpu_cores": cores,
        "memory": capacity.memory_mib,
        "memory_in_mb": capacity.memory_mib,
        "vgpus": capacity.gpus,
        "total_gpu_cores": capacity.gpus,
        "last_modified_timestamp": heartbeat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{Condition, InstanceSpec, InstanceStatus, Workload};

    fn chrono_now() -> crds::Time {
        serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap()
    }

    fn instance(phase: Phase, cluster: Option<&str>, scheduled: Option<(&str, &str)>) -> Instance {
        let mut i = Instance::new(
            "web-abc-0",
            InstanceSpec {
                service: "web".into(),
                ordinal: 0,
                template: Workload::default(),
                cluster: cluster.map(Into::into),
                node: None,
            },
        );
        let conditions = scheduled
            .map(|(reason, message)| Condition {
                type_: crds::conditions::SCHEDULED.into(),
                status: ConditionStatus::False,
                reason: reason.into(),
                message: message.into(),
                last_transition_time: None,
            })
            .into_iter()
            .collect();
        i.status = Some(InstanceStatus {
            phase,
            conditions,
            ..Default::default()
        });
        i
    }

    #[test]
    fn instance_statuses_have_oakestras_names() {
        let cases = [
            (instance(Phase::Pending, None, None), "REQUESTED"),
            (
                instance(
                    Phase::Pending,
                    None,
                    Some(("NoResourcesAvailable", "0/1 fit")),
                ),
                "NoActiveClusterWithCapacity",
            ),
            (
                instance(Phase::Pending, None, Some(("NoTargetCluster", "none"))),
                "TargetClusterNotFound",
            ),
            (
                instance(Phase::Pending, Some("local"), Some(("NoTargetNode", "n"))),
                "NO_QUALIFIED_WORKER_FOUND",
            ),
            (
                instance(Phase::Pending, Some("local"), None),
                "CLUSTER_SCHEDULED",
            ),
            (
                instance(Phase::Scheduled, Some("local"), None),
                "NODE_SCHEDULED",
            ),
            (instance(Phase::Starting, Some("local"), None), "CREATING"),
            (instance(Phase::Running, Some("local"), None), "RUNNING"),
            (instance(Phase::Succeeded, Some("local"), None), "COMPLETED"),
            (instance(Phase::Failed, Some("local"), None), "FAILED"),
            (
                instance(Phase::Terminating, Some("local"), None),
                "UNDEPLOYED",
            ),
        ];
        for (i, want) in cases {
            assert_eq!(instance_status(&i).0, want, "{:?}", i.status);
        }
        let (_, detail) = instance_status(&instance(
            Phase::Pending,
            None,
            Some(("NoResourcesAvailable", "0/1 clusters fit")),
        ));
        assert_eq!(detail, "NoResourcesAvailable: 0/1 clusters fit");
    }

    fn namespace(name: &str, uid: &str, original: &str, extra: &str) -> Namespace {
        let mut ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": uid}}))
        .unwrap();
        ns.metadata
            .labels
            .insert(LABEL_APPLICATION_NAMESPACE.into(), original.into());
        ns.metadata
            .annotations
            .insert(ANNOTATION_EXTRA.into(), extra.into());
        ns
    }

    fn service(ns: &str, name: &str, app: &str) -> Service {
        let mut s: Service = serde_json::from_value(json!({
            "apiVersion": "oakestra.io/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
            "spec": {"template": {"image": "nginx"}}}))
        .unwrap();
        s.metadata
            .labels
            .insert(LABEL_APPLICATION.into(), app.into());
        s
    }

    #[test]
    fn applications_come_from_records_and_labels() {
        let namespaces = [
            namespace(
                "test",
                "u1",
                "test",
                r#"{"applications":{"clientserver":{"application_desc":"demo"},"blank":{}},"sla_version":"v2.0"}"#,
            ),
            // Not made by the SLA import: no label, ignored.
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "default", "uid": "u0"}}))
            .unwrap(),
        ];
        let services = [
            service("test", "curl", "clientserver"),
            service("test", "nginx", "clientserver"),
            // An application label without a record still makes an application.
            service("test", "other", "labelled"),
            service("default", "plain", "clientserver"),
        ];
        let apps = applications(&namespaces, &services);
        let summary: Vec<(&str, &str, Vec<&str>)> = apps
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.desc.as_str(),
                    a.services.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("blank", "", vec![]),
                ("clientserver", "demo", vec!["curl", "nginx"]),
                ("labelled", "", vec!["other"]),
            ]
        );
        assert_eq!(apps[1].id, app_id("u1", "clientserver"));
        assert_eq!(apps[1].id.len(), 24);
        assert_ne!(app_id("u1", "clientserver"), app_id("u2", "clientserver"));
        // Replacing the records keeps the other fields of the annotation.
        let mut only = Map::new();
        only.insert("blank".into(), json!({}));
        let text = with_records(&namespaces[0], only);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"applications": {"blank": {}}, "sla_version": "v2.0"})
        );
    }

    #[test]
    fn a_service_has_oakestras_fields() {
        let mut s = service("test", "nginx", "clientserver");
        s.spec.replicas = 2;
        s.spec.template.command = vec!["sh".into(), "-c".into()];
        s.spec.template.resources.cpu_millicores = 1500;
        s.spec.template.ports = sla::parse_ports("6080:60/tcp;53/udp").unwrap();
        let mut a = instance(Phase::Running, Some("local"), None);
        a.spec.ordinal = 1;
        let b = instance(Phase::Pending, None, Some(("NoResourcesAvailable", "full")));
        let v = service_json(&s, "app1", &[&a, &b]);
        assert_eq!(v["microserviceID"], "uid-nginx");
        assert_eq!(v["applicationID"], "app1");
        assert_eq!(v["virtualization"], "docker");
        assert_eq!(v["vcpus"], 1.5);
        assert_eq!(v["port"], "6080:60/tcp;53:53/udp");
        assert_eq!(v["status"], "RUNNING");
        let numbers: Vec<&Value> = v["instance_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &i["instance_number"])
            .collect();
        assert_eq!(numbers, [&json!(0), &json!(1)]);
        assert_eq!(
            v["instance_list"][0]["status"],
            "NoActiveClusterWithCapacity"
        );
        assert_eq!(v["instance_list"][1]["cluster_id"], "local");
        // Without instances there is no status at all; one being deleted is not listed.
        assert!(service_json(&s, "app1", &[]).get("status").is_none());
        let mut going = instance(Phase::Running, Some("local"), None);
        going.metadata.deletion_timestamp = Some(chrono_now());
        let v = service_json(&s, "app1", &[&going, &b]);
        assert_eq!(v["instance_list"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_cluster_has_the_legacy_names() {
        let c: Cluster = serde_json::from_value(json!({
            "apiVersion": "oakestra.io/v1", "kind": "Cluster",
            "metadata": {"name": "local", "uid": "c1"},
            "spec": {"location": {"latitude": 48.1, "longitude": 11.5}},
            "status": {
                "capacity": {"cpuMillicores": 4000, "memoryMiB": 8192, "gpus": 0, "nodes": 1},
                "allocatable": {"cpuMillicores": 3000, "memoryMiB": 8000, "gpus": 0, "nodes": 1},
                "runtimes": ["container", "process"],
                "conditions": [{"type": "Ready", "status": "True", "reason": "NodesReady", "message": ""}]
            }
        }))
        .unwrap();
        let v = cluster_json(&c);
        assert_eq!(v["cluster_name"], "local");
        assert_eq!(v["cluster_location"], "48.1,11.5");
        assert_eq!(v["active"], true);
        assert_eq!(v["active_nodes"], 1);
        assert_eq!(v["total_cpu_cores"], 4.0);
        assert_eq!(v["memory_in_mb"], 8192);
        assert_eq!(v["aggregated_cpu_percent"], 25.0);
        assert_eq!(v["virtualization"], json!(["docker", "process"]));
    }
}
