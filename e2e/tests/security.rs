//! Who may do what, over real processes (in the style of Kubernetes' `rbac_test.go`):
//! an `oakestra root` and two clusters `a` and `b` that joined it with its token, all
//! without controllers (nothing moves the objects under test). Each row is an identity
//! × an action × a target, and the code a user gets: 0 when the TLS handshake itself
//! refuses the credential.

use std::path::Path;

use client::tls::{ClientCertificate, TlsOptions};
use client::{Client, ClientError, ListParams};
use e2e::{free_port, Oakestra, RootServer};
use pki::{CertificateAuthority, CertifiedKey, Identity, Usage};
use serde_json::{json, Value};

/// A client of `url` trusting `ca_pem`, presenting `cert` if given.
fn client_as(url: &str, ca_pem: &str, cert: Option<&CertifiedKey>) -> Client {
    let identity = cert.map(|c| ClientCertificate::new(&c.cert_pem, &c.key_pem).unwrap());
    Client::with_tls(
        url,
        TlsOptions {
            ca_pem: Some(ca_pem.to_string()),
            identity,
            ..Default::default()
        },
    )
    .unwrap()
}

fn kind(plural: &str) -> &'static crds::KindInfo {
    crds::kind_by_name(plural).expect("a served kind")
}

fn instance(name: &str, cluster: Option<&str>, node: Option<&str>) -> Value {
    json!({
        "apiVersion": "oakestra.io/v1", "kind": "Instance",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"service": "web", "ordinal": 0, "template": {"runtime": "process", "executable": "/bin/true"},
                 "cluster": cluster, "node": node},
    })
}

/// An Instance like [`instance`] whose environment takes a value from Secret `db`.
fn configured(name: &str, cluster: Option<&str>, node: Option<&str>) -> Value {
    let mut i = instance(name, cluster, node);
    i["spec"]["template"]["env"] =
        json!([{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]);
    i
}

/// Secrets `db` (which [`configured`] Instances use) and `other`, made by `admin`.
async fn secrets(admin: &Client) {
    for name in ["db", "other"] {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": name, "namespace": "default"},
                            "stringData": {"password": "s3cret"}});
        admin
            .dynamic(kind("secrets"), Some("default"))
            .create(&secret)
            .await
            .unwrap();
    }
}

fn named(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "oakestra.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// The Service an attacker would post: a shell command on every worker.
fn process_service() -> Value {
    json!({"apiVersion": "oakestra.io/v1", "kind": "Service",
           "metadata": {"name": "evil", "namespace": "default"},
           "spec": {"replicas": 1, "template": {"runtime": "process", "executable": "/bin/sh",
                                                "command": ["-c", "id"]}}})
}

fn event(name: &str) -> Value {
    json!({"apiVersion": "oakestra.io/v1", "kind": "Event",
           "metadata": {"name": name, "namespace": "default"},
           "involvedObject": {"kind": "Instance", "name": "i-a", "namespace": "default"},
           "reason": "Test", "message": "from the authorization table"})
}

/// What a row does.
#[derive(Debug, Clone)]
enum Action {
    Get(&'static str, &'static str),
    List(&'static str, Option<&'static str>),
    Watch(&'static str, Option<&'static str>),
    Create(&'static str, Value),
    Patch(&'static str, &'static str, Value),
    PatchStatus(&'static str, &'static str, Value),
    Delete(&'static str, &'static str),
    Bind(&'static str, &'static str),
    Logs(&'static str),
}

/// The HTTP code `action` gets from `client`: 0 when the connection is refused.
async fn code_of(client: &Client, action: &Action) -> u16 {
    let ns = |plural: &str| kind(plural).namespaced.then_some("default");
    let api = |plural: &str| client.dynamic(kind(plural), ns(plural));
    let params = |selector: &Option<&str>| ListParams {
        field_selector: selector.map(String::from),
        ..Default::default()
    };
    let result: Result<u16, ClientError> = match action {
        Action::Get(plural, name) => api(plural).get(name).await.map(|_| 200),
        Action::List(plural, selector) => api(plural).list(&params(selector)).await.map(|_| 200),
        Action::Watch(plural, selector) => api(plural).watch(&params(selector)).await.map(|_| 200),
        Action::Create(plural, object) => api(plural).create(object).await.map(|_| 201),
        Action::Patch(plural, name, patch) => api(plural).patch(name, patch).await.map(|_| 200),
        Action::PatchStatus(plural, name, patch) => {
            api(plural).patch_status(name, patch).await.map(|_| 200)
        }
        Action::Delete(plural, name) => api(plural).delete(name, None).await.map(|_| 200),
        Action::Bind(name, target) => api("instances")
            .bind(name, "Cluster", target, None)
            .await
            .map(|_| 201),
        Action::Logs(name) => client
            .get_text(&format!(
                "/apis/oakestra.io/v1/namespaces/default/instances/{name}/log"
            ))
            .await
            .map(|_| 200),
    };
    match result {
        Ok(code) => code,
        Err(e) => e.code().unwrap_or_else(|| {
            assert!(e.is_transport() || matches!(e, ClientError::Tls(_)), "{e}");
            0
        }),
    }
}

/// The processes and the credentials of every identity in the table.
struct Hierarchy {
    _dir: tempfile::TempDir,
    root: RootServer,
    _clusters: Vec<Oakestra>,
    root_ca: String,
    a_url: String,
    a_ca: String,
    /// Certificates by identity name.
    certs: std::collections::BTreeMap<&'static str, CertifiedKey>,
}

fn load_ca(data_dir: &Path) -> CertificateAuthority {
    CertificateAuthority::load(&data_dir.join("pki")).unwrap()
}

impl Hierarchy {
    async fn start() -> Hierarchy {
        let dir = tempfile::tempdir().unwrap();
        let root = RootServer::start_with(
            &format!("embedded:{}", dir.path().join("root").display()),
            dir.path(),
            &["--no-controllers"],
        );
        let mut clusters = Vec::new();
        let mut urls = Vec::new();
        for name in ["a", "b"] {
            let port = free_port();
            let args = e2e::cluster_args(
                name,
                &root.upstream(),
                port,
                dir.path(),
                &["--no-controllers"],
            );
            let cluster = Oakestra::start(name, &args, Some(port), dir.path());
            urls.push(cluster.url());
            clusters.push(cluster);
        }
        let root_ca = load_ca(&root.data_dir);
        let a_ca = load_ca(&e2e::cluster_dir(dir.path(), "a"));
        let b_ca = load_ca(&e2e::cluster_dir(dir.path(), "b"));
        let hour = std::time::Duration::from_secs(3600);
        let now = chrono::Utc::now();
        let mut certs = std::collections::BTreeMap::new();
        // What the clusters got by joining: their certificates at the root.
        for name in ["a", "b"] {
            let upstream = e2e::cluster_dir(dir.path(), name).join("pki/upstream");
            let key = if name == "a" {
                "cluster a"
            } else {
                "cluster b"
            };
            certs.insert(key, CertifiedKey::load(&upstream, "client").unwrap());
        }
        let issue = |ca: &CertificateAuthority, identity: Identity| {
            ca.issue_client(&identity, hour).unwrap()
        };
        let node = |name: &str| Identity::Node { name: name.into() };
        certs.insert("root admin", issue(&root_ca, Identity::admin()));
        certs.insert(
            "expired admin",
            root_ca
                .issue_between(
                    &Usage::Client(Identity::admin()),
                    now - chrono::Duration::hours(2),
                    now - chrono::Duration::hours(1),
                )
                .unwrap(),
        );
        certs.insert(
            "foreign admin",
            issue(
                &CertificateAuthority::create("oakestra root CA").unwrap(),
                Identity::admin(),
            ),
        );
        certs.insert("a admin", issue(&a_ca, Identity::admin()));
        certs.insert("n1", issue(&a_ca, node("n1")));
        certs.insert("n2", issue(&a_ca, node("n2")));
        certs.insert("b's n3", issue(&b_ca, node("n3")));
        certs.insert(
            "a itself",
            issue(&a_ca, Identity::Cluster { name: "a".into() }),
        );
        certs.insert(
            "root proxy",
            CertifiedKey::load(&root.data_dir.join("pki"), "proxy").unwrap(),
        );
        Hierarchy {
            _dir: dir,
            root_ca: root_ca.cert_pem().to_string(),
            a_url: urls[0].clone(),
            a_ca: a_ca.cert_pem().to_string(),
            root,
            _clusters: clusters,
            certs,
        }
    }

    /// A client of the root as `who` (`anonymous` presents nothing).
    fn at_root(&self, who: &str) -> Client {
        client_as(&self.root.url(), &self.root_ca, self.certs.get(who))
    }

    /// A client of cluster a as `who`.
    fn at_a(&self, who: &str) -> Client {
        client_as(&self.a_url, &self.a_ca, self.certs.get(who))
    }
}

/// Run `rows` (who, action, expected code) against `tier`, and fail with every row that
/// got another code.
async fn check(tier: &str, rows: Vec<(&str, Action, u16)>, client: impl Fn(&str) -> Client) {
    let mut wrong = Vec::new();
    for (who, action, expected) in rows {
        let got = code_of(&client(who), &action).await;
        if got != expected {
            wrong.push(format!(
                "{tier}: {who} {action:?}: expected {expected}, got {got}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} rows wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn every_identity_can_do_its_own_job_and_nothing_else() {
    let h = Hierarchy::start().await;
    use Action::*;

    // The root's objects, made by its administrator.
    let admin = h.at_root("root admin");
    for object in [
        instance("i-a", Some("a"), None),
        instance("i-b", Some("b"), None),
        instance("i-none", None, None),
        configured("i-a-conf", Some("a"), None),
    ] {
        admin
            .dynamic(kind("instances"), Some("default"))
            .create(&object)
            .await
            .unwrap();
    }
    for name in ["a", "b"] {
        admin
            .dynamic(kind("clusters"), None)
            .create(&named("Cluster", name, json!({})))
            .await
            .unwrap();
    }
    secrets(&admin).await;
    let status = json!({"status": {"phase": "Running"}});
    let node_of = |node: &str| json!({"spec": {"node": node}});
    let rows = vec![
        // Secrets: only those its instances use, read one by one.
        ("root admin", Get("secrets", "other"), 200),
        ("cluster a", Get("secrets", "db"), 200),
        ("cluster a", Get("secrets", "other"), 403),
        ("cluster a", Get("secrets", "no-such-secret"), 403),
        ("cluster a", List("secrets", None), 403),
        ("cluster a", Watch("secrets", None), 403),
        ("cluster b", Get("secrets", "db"), 403),
        ("anonymous", Get("secrets", "db"), 401),
        // No credential, or one the TLS handshake refuses. (Before this, an anonymous
        // POST of a `runtime: process` Service ran its command as root on a worker.)
        ("anonymous", Create("services", process_service()), 401),
        ("anonymous", List("instances", None), 401),
        ("anonymous", Get("instances", "i-a"), 401),
        ("anonymous", Logs("i-a"), 401),
        ("foreign admin", List("instances", None), 0),
        ("expired admin", List("instances", None), 0),
        ("n1", List("instances", None), 0),
        // The administrator.
        ("root admin", List("instances", None), 200),
        ("root admin", Get("clusters", "b"), 200),
        // Cluster a: only what is placed on a, only as its job needs.
        ("cluster a", List("instances", Some("spec.cluster=a")), 200),
        ("cluster a", Watch("instances", Some("spec.cluster=a")), 200),
        ("cluster a", List("instances", None), 403),
        ("cluster a", List("instances", Some("spec.cluster=b")), 403),
        ("cluster a", Watch("instances", None), 403),
        ("cluster a", Get("instances", "i-a"), 200),
        ("cluster a", Get("instances", "i-b"), 403),
        ("cluster a", Get("instances", "i-none"), 403),
        ("cluster a", Get("instances", "no-such-instance"), 403),
        (
            "cluster a",
            PatchStatus("instances", "i-a", status.clone()),
            200,
        ),
        (
            "cluster a",
            PatchStatus("instances", "i-b", status.clone()),
            403,
        ),
        ("cluster a", Patch("instances", "i-a", node_of("w1")), 200),
        ("cluster a", Patch("instances", "i-b", node_of("w1")), 403),
        (
            "cluster a",
            Patch(
                "instances",
                "i-a",
                json!({"spec": {"template": {"executable": "/bin/sh"}}}),
            ),
            403,
        ),
        (
            "cluster a",
            Create("instances", instance("mine", Some("a"), None)),
            403,
        ),
        ("cluster a", Delete("instances", "i-a"), 403),
        ("cluster a", Bind("i-none", "a"), 403),
        ("cluster a", Get("clusters", "a"), 200),
        (
            "cluster a",
            PatchStatus(
                "clusters",
                "a",
                json!({"status": {"apiEndpoint": "https://a"}}),
            ),
            200,
        ),
        // The other clusters route its traffic: read, never written.
        ("cluster a", Get("clusters", "b"), 200),
        (
            "cluster a",
            PatchStatus(
                "clusters",
                "b",
                json!({"status": {"apiEndpoint": "https://x"}}),
            ),
            403,
        ),
        (
            "cluster a",
            Create("clusters", named("Cluster", "c", json!({}))),
            403,
        ),
        ("cluster a", Delete("clusters", "a"), 403),
        ("cluster a", List("services", None), 403),
        ("cluster a", Create("events", event("from-a")), 201),
        ("cluster a", Logs("i-a"), 403),
        ("cluster b", List("instances", Some("spec.cluster=b")), 200),
        ("cluster b", Get("instances", "i-a"), 403),
        (
            "cluster b",
            PatchStatus("instances", "i-a", status.clone()),
            403,
        ),
    ];
    check("root", rows, |who| h.at_root(who)).await;

    // A cluster's hand-back: spec.cluster to none, itself added to rejected-by.
    let cluster_a = h.at_root("cluster a");
    let hand_back = json!({"metadata": {"annotations": {"oakestra.io/rejected-by": "a"}},
                           "spec": {"cluster": null, "node": null}});
    let handed = cluster_a
        .dynamic(kind("instances"), Some("default"))
        .patch("i-a", &hand_back)
        .await
        .unwrap();
    assert_eq!(handed.pointer("/spec/cluster"), None, "{handed}");

    // Cluster a's objects, made by its administrator.
    let admin = h.at_a("a admin");
    for object in [
        instance("i-n1", Some("a"), Some("n1")),
        instance("i-n2", Some("a"), Some("n2")),
        instance("i-unbound", Some("a"), None),
        configured("i-n1-conf", Some("a"), Some("n1")),
        configured("i-unbound-conf", Some("a"), None),
    ] {
        admin
            .dynamic(kind("instances"), Some("default"))
            .create(&object)
            .await
            .unwrap();
    }
    for name in ["n1", "n2"] {
        admin
            .dynamic(kind("nodes"), None)
            .create(&named("Node", name, json!({"address": "127.0.0.1"})))
            .await
            .unwrap();
    }
    admin
        .dynamic(kind("leases"), None)
        .create(&named("Lease", "n2", json!({})))
        .await
        .unwrap();
    secrets(&admin).await;
    let rows = vec![
        // Secrets: only those the instances bound to the node use.
        ("n1", Get("secrets", "db"), 200),
        ("n1", Get("secrets", "other"), 403),
        ("n1", List("secrets", None), 403),
        (
            "n1",
            Patch("secrets", "db", json!({"stringData": {"password": "x"}})),
            403,
        ),
        ("n2", Get("secrets", "db"), 403),
        ("a admin", Get("secrets", "other"), 200),
        ("anonymous", List("instances", None), 401),
        ("b's n3", List("instances", None), 0),
        ("foreign admin", List("instances", None), 0),
        ("a admin", List("instances", None), 200),
        // The root's administrator is one here too; the root's proxy reads logs and
        // Nodes, nothing else.
        ("root admin", List("nodes", None), 200),
        ("root proxy", List("instances", None), 403),
        ("root proxy", Get("nodes", "n1"), 200),
        ("root proxy", List("nodes", None), 200),
        ("root proxy", Watch("nodes", None), 200),
        (
            "root proxy",
            PatchStatus("nodes", "n1", status.clone()),
            403,
        ),
        // Cluster a's own identity is for its agents, not for its API.
        ("a itself", List("instances", None), 401),
        // Node n1: only what is bound to it, only its status.
        ("n1", List("instances", Some("spec.node=n1")), 200),
        ("n1", Watch("instances", Some("spec.node=n1")), 200),
        ("n1", List("instances", None), 403),
        ("n1", List("instances", Some("spec.node=n2")), 403),
        ("n1", Watch("instances", None), 403),
        ("n1", Get("instances", "i-n1"), 200),
        ("n1", Get("instances", "i-n2"), 403),
        ("n1", Get("instances", "i-unbound"), 403),
        ("n1", PatchStatus("instances", "i-n1", status.clone()), 200),
        ("n1", PatchStatus("instances", "i-n2", status.clone()), 403),
        (
            "n1",
            PatchStatus("instances", "i-unbound", status.clone()),
            403,
        ),
        ("n1", Patch("instances", "i-n1", node_of("n2")), 403),
        ("n1", Delete("instances", "i-n1"), 403),
        (
            "n1",
            Create("instances", instance("mine", Some("a"), Some("n1"))),
            403,
        ),
        ("n1", Get("nodes", "n1"), 200),
        (
            "n1",
            Patch(
                "nodes",
                "n1",
                json!({"metadata": {"labels": {"disk": "ssd"}}}),
            ),
            200,
        ),
        (
            "n1",
            PatchStatus(
                "nodes",
                "n1",
                json!({"status": {"agentEndpoint": "https://n1"}}),
            ),
            200,
        ),
        // The other nodes are its overlay peers: read, never written.
        ("n1", Get("nodes", "n2"), 200),
        (
            "n1",
            PatchStatus(
                "nodes",
                "n2",
                json!({"status": {"agentEndpoint": "https://x"}}),
            ),
            403,
        ),
        ("n1", Delete("nodes", "n1"), 403),
        (
            "n1",
            Create(
                "nodes",
                named("Node", "n9", json!({"address": "127.0.0.1"})),
            ),
            403,
        ),
        ("n1", List("nodes", None), 200),
        ("n1", List("endpoints", None), 200),
        ("n1", Create("leases", named("Lease", "n1", json!({}))), 201),
        (
            "n1",
            Patch("leases", "n1", json!({"spec": {"holderIdentity": "n1"}})),
            200,
        ),
        (
            "n1",
            Patch("leases", "n2", json!({"spec": {"holderIdentity": "n1"}})),
            403,
        ),
        ("n1", Create("events", event("from-n1")), 201),
        // Its cluster's location (closest IPs): read, never written.
        ("n1", List("clusters", None), 200),
        (
            "n1",
            Patch("clusters", "a", json!({"metadata": {"labels": {"x": "y"}}})),
            403,
        ),
        ("n1", Logs("i-n1"), 403),
        ("n2", Get("instances", "i-n2"), 200),
        ("n2", PatchStatus("instances", "i-n1", status.clone()), 403),
    ];
    check("cluster a", rows, |who| h.at_a(who)).await;
}

#[tokio::test]
async fn health_version_and_the_ca_are_public_and_nothing_else_is() {
    let h = Hierarchy::start().await;
    let anonymous = h.at_root("anonymous");
    for path in ["/healthz", "/readyz", "/version", "/cacerts"] {
        anonymous
            .get_text(path)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    assert_eq!(
        anonymous.get_text("/cacerts").await.unwrap(),
        h.root_ca,
        "the CA served is the root's"
    );
    for path in ["/metrics", "/apis", "/openapi/v3", "/api/v1/namespaces"] {
        let e = anonymous.get_text(path).await.unwrap_err();
        let ClientError::Api { status } = &e else {
            panic!("{path}: {e}")
        };
        assert_eq!(
            (status.code, status.reason.as_str(), status.message.as_str()),
            (401, "Unauthorized", "Unauthorized"),
            "{path}"
        );
    }
    // The 403 names the user, the verb, the resource and the namespace.
    let e = h
        .at_root("cluster a")
        .dynamic(kind("services"), Some("default"))
        .list(&ListParams::default())
        .await
        .unwrap_err();
    let ClientError::Api { status } = &e else {
        panic!("{e}")
    };
    assert_eq!(status.reason, "Forbidden");
    assert!(
        status.message.starts_with(
            r#"services.oakestra.io is forbidden: User "oakestra:cluster:a" cannot list resource "services" in API group "oakestra.io" in the namespace "default""#
        ),
        "{}",
        status.message
    );
}
