//! The secured server over a real TLS listener: certificates made here with rcgen (a
//! CA, a server certificate for 127.0.0.1, client certificates with the subjects of
//! `Identity::subject`), requests sent with reqwest over rustls, as a client would.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apiserver::auth::{Authenticate, Security, ServingCertificate};
use apiserver::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use apiserver::{Server, ServerConfig};
use axum::extract::Extension;
use axum::http::HeaderMap;
use futures::StreamExt;
use pki::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

const INSTANCES: &str = "/apis/oakestra.io/v1/namespaces/default/instances";
const ADMIN_TOKEN: &str = "abc123.0123456789abcdef";

/// A certificate authority of the test.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM, certificate DER) of a leaf.
    fn leaf(&self, mut params: CertificateParams) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn server(&self) -> (String, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (cert, key, _) = self.leaf(params);
        (cert, key)
    }

    fn client(&self, identity: &Identity) -> (String, String, Vec<u8>) {
        let (cn, orgs) = identity.subject().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        for org in orgs {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.leaf(params)
    }
}

/// The authenticator of the test: the leaves it issued, and one admin token.
struct Table(HashMap<Vec<u8>, Identity>);

impl Authenticate for Table {
    fn certificate(&self, chain_der: &[Vec<u8>]) -> Result<Identity, String> {
        self.0
            .get(&chain_der[0])
            .cloned()
            .ok_or_else(|| "not a certificate of this test".into())
    }
    fn bearer(&self, token: &str) -> Result<Identity, String> {
        match token {
            ADMIN_TOKEN => Ok(Identity::admin()),
            _ => Err("unknown token".into()),
        }
    }
}

struct Cluster {
    server: Server,
    _dir: tempfile::TempDir,
    ca: Ca,
    serving: ServingCertificate,
    /// (certificate PEM, key PEM) of each identity's client certificate.
    certs: HashMap<String, (String, String)>,
}

/// What the binary's extra route sees: the identity and whether a credential header
/// reached it.
async fn whoami(Extension(identity): Extension<Identity>, headers: HeaderMap) -> String {
    format!(
        "{} authorization-header={}",
        identity,
        headers.contains_key("authorization")
    )
}

async fn start() -> Cluster {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server();
    let serving = ServingCertificate::new(&cert, &key).unwrap();
    let mut identities = HashMap::new();
    let mut certs = HashMap::new();
    for identity in [
        Identity::admin(),
        Identity::Node { name: "n1".into() },
        Identity::Node { name: "n2".into() },
    ] {
        let (cert, key, der) = ca.client(&identity);
        identities.insert(der, identity.clone());
        certs.insert(identity.user(), (cert, key));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let config = ServerConfig {
        security: Some(Security {
            serving: serving.clone(),
            client_cas_pem: vec![ca.pem.clone()],
            authenticator: Arc::new(Table(identities)),
            routes: axum::Router::new().route("/whoami", axum::routing::get(whoami)),
        }),
        ..ServerConfig::default()
    };
    let server = Server::start_with_store("127.0.0.1:0".parse().unwrap(), Arc::new(store), config)
        .await
        .unwrap();
    Cluster {
        server,
        _dir: dir,
        ca,
        serving,
        certs,
    }
}

/// A client trusting `ca_pem`, presenting `cert` (certificate and key PEM) if given:
/// HTTP/1.1 over rustls, one connection per request.
#[derive(Clone)]
struct Http {
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

fn client(addr: std::net::SocketAddr, ca_pem: &str, cert: Option<&(String, String)>) -> Http {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Http {
        addr,
        config: Arc::new(config),
    }
}

type Answer = axum::http::Response<hyper::body::Incoming>;

impl Http {
    /// Send one request (`headers` besides Host; a JSON body if given).
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(b) => axum::body::Body::from(serde_json::to_vec(b).unwrap()),
            None => axum::body::Body::empty(),
        };
        let response = sender
            .send_request(request.body(body).unwrap())
            .await
            .map_err(|e| format!("request: {e}"))?;
        Ok(response)
    }

    /// The status and the body's text.
    async fn text(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let response = self.send(method, path, headers, None).await.unwrap();
        read(response).await
    }

    /// The status and the body as JSON (a string if it is not JSON).
    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (code, text) = read(self.send(method, path, headers, body).await.unwrap()).await;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, &[], None).await
    }

    async fn merge_patch(&self, path: &str, patch: &Value) -> (u16, Value) {
        let content_type = [("content-type", "application/merge-patch+json")];
        self.call("PATCH", path, &content_type, Some(patch)).await
    }
}

async fn read(response: Answer) -> (u16, String) {
    let code = response.status().as_u16();
    let body = axum::body::Body::new(response.into_body());
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    (code, String::from_utf8(bytes.to_vec()).unwrap())
}

impl Cluster {
    fn anonymous(&self) -> Http {
        client(self.server.addr, &self.ca.pem, None)
    }
    fn as_user(&self, user: &str) -> Http {
        client(self.server.addr, &self.ca.pem, Some(&self.certs[user]))
    }
    fn admin(&self) -> Http {
        self.as_user("oakestra:admin")
    }
    fn n1(&self) -> Http {
        self.as_user("oakestra:node:n1")
    }

    async fn create_instance(&self, name: &str, node: &str) -> Value {
        let body = json!({
            "apiVersion": "oakestra.io/v1", "kind": "Instance", "metadata": {"name": name},
            "spec": {"service": "web", "ordinal": 0, "template": {"image": "x"}, "cluster": "c1", "node": node},
        });
        let content_type = [("content-type", "application/json")];
        let (code, created) = self
            .admin()
            .call("POST", INSTANCES, &content_type, Some(&body))
            .await;
        assert_eq!(code, 201, "{created}");
        created
    }

    async fn stored(&self, name: &str) -> Value {
        let (code, object) = self.admin().get(&format!("{INSTANCES}/{name}")).await;
        assert_eq!(code, 200, "{object}");
        object
    }
}

const UNAUTHORIZED: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;

#[tokio::test]
async fn anonymous_reaches_health_version_and_the_binarys_routes_only() {
    let c = start().await;
    let anonymous = c.anonymous();
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        let (code, body) = anonymous.text("GET", path, &[]).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    assert_eq!(
        anonymous.text("GET", "/whoami", &[]).await,
        (200, "system:anonymous authorization-header=false".into())
    );
    // The exact 401 of the design, for the API, metrics, discovery and unknown paths.
    for path in [
        INSTANCES,
        "/metrics",
        "/apis",
        "/api/v1/namespaces",
        "/nowhere",
    ] {
        assert_eq!(
            anonymous.text("GET", path, &[]).await,
            (401, UNAUTHORIZED.into()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_admin_certificate_or_token_reaches_everything() {
    let c = start().await;
    let admin = c.admin();
    for path in [INSTANCES, "/metrics", "/apis", "/api/v1/namespaces"] {
        let (code, body) = admin.text("GET", path, &[]).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    assert_eq!(
        admin.text("GET", "/whoami", &[]).await,
        (200, "oakestra:admin authorization-header=false".into())
    );

    // A bearer token, without a client certificate; handlers never see the header.
    let anonymous = c.anonymous();
    let token = format!("Bearer {ADMIN_TOKEN}");
    let bearer = [("authorization", token.as_str())];
    let (code, list) = anonymous.call("GET", INSTANCES, &bearer, None).await;
    assert_eq!((code, list["kind"].as_str()), (200, Some("InstanceList")));
    assert_eq!(
        anonymous.text("GET", "/whoami", &bearer).await,
        (200, "oakestra:admin authorization-header=false".into())
    );
    // A bad token is a 401, even on paths anonymous callers reach.
    let bad = [("authorization", "Bearer abc123.wrongwrongwrongw")];
    for path in [INSTANCES, "/healthz", "/whoami"] {
        assert_eq!(
            anonymous.text("GET", path, &bad).await,
            (401, UNAUTHORIZED.into()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_node_lists_and_writes_only_its_own_instances() {
    let c = start().await;
    c.create_instance("mine", "n1").await;
    let theirs = c.create_instance("theirs", "n2").await;
    let n1 = c.n1();

    let (code, list) = n1
        .get(&format!("{INSTANCES}?fieldSelector=spec.node%3Dn1"))
        .await;
    assert_eq!(code, 200, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine"]);

    let (code, body) = n1.get(INSTANCES).await;
    assert_eq!((code, body["reason"].as_str()), (403, Some("Forbidden")));
    assert_eq!(
        body["message"],
        r#"instances.oakestra.io is forbidden: User "oakestra:node:n1" cannot list resource "instances" in API group "oakestra.io" in the namespace "default": the request must select spec.node=n1 (fieldSelector)"#
    );

    // Someone else's instance, or one that does not exist: the same 403.
    for name in ["theirs", "missing"] {
        let (code, body) = n1.get(&format!("{INSTANCES}/{name}")).await;
        let want = format!(
            r#"instances.oakestra.io "{name}" is forbidden: User "oakestra:node:n1" cannot get resource "instances" in API group "oakestra.io" in the namespace "default": only instances bound to node "n1" are visible to it"#
        );
        assert_eq!((code, body["message"].as_str()), (403, Some(want.as_str())));
        assert_eq!(
            body["details"],
            json!({"name": name, "group": "oakestra.io", "kind": "instances"})
        );
    }

    // A status patch of the instance bound to n2: 403, for a dry run too, and the
    // stored object is unchanged.
    let patch = json!({"status": {"phase": "Running"}});
    for query in ["", "?dryRun=All"] {
        let (code, body) = n1
            .merge_patch(&format!("{INSTANCES}/theirs/status{query}"), &patch)
            .await;
        assert_eq!(code, 403, "{query}: {body}");
        assert_eq!(
            body["message"],
            r#"instances.oakestra.io "theirs" is forbidden: User "oakestra:node:n1" cannot patch resource "instances/status" in API group "oakestra.io" in the namespace "default": only instances bound to node "n1" are visible to it"#
        );
    }
    assert_eq!(c.stored("theirs").await, theirs);

    // Its own: 200, and stored.
    let (code, body) = n1
        .merge_patch(&format!("{INSTANCES}/mine/status"), &patch)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(c.stored("mine").await["status"]["phase"], "Running");

    // But not its main part (a node writes only status).
    let (code, body) = n1
        .merge_patch(
            &format!("{INSTANCES}/mine"),
            &json!({"spec": {"node": "n2"}}),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(c.stored("mine").await["spec"]["node"], "n1");
}

#[tokio::test]
async fn a_watch_streams_over_tls() {
    let c = start().await;
    let path = format!("{INSTANCES}?watch=true&fieldSelector=spec.node%3Dn1");
    let response = c.n1().send("GET", &path, &[], None).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = axum::body::Body::new(response.into_body()).into_data_stream();
    c.create_instance("other", "n2").await;
    c.create_instance("watched", "n1").await;
    let mut seen = String::new();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            if let Some((line, _)) = seen.split_once('\n') {
                return serde_json::from_str::<Value>(line).unwrap();
            }
        }
        panic!("the watch ended: {seen}");
    })
    .await
    .expect("a watch event within 10 s");
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "watched");
}

#[tokio::test]
async fn a_certificate_of_another_ca_fails_the_handshake() {
    let c = start().await;
    let foreign = Ca::new("foreign CA");
    let (cert, key, _) = foreign.client(&Identity::admin());
    let result = client(c.server.addr, &c.ca.pem, Some(&(cert, key)))
        .send("GET", "/healthz", &[], None)
        .await;
    assert!(result.is_err(), "{:?}", result.map(|r| r.status()));
    // The server goes on serving.
    assert_eq!(c.admin().get(INSTANCES).await.0, 200);
}

#[tokio::test]
async fn a_replaced_serving_certificate_is_served_to_new_connections() {
    let c = start().await;
    let next_ca = Ca::new("next CA");
    let (cert, key) = next_ca.server();
    assert!(c.serving.replace("not a certificate", &key).is_err());
    assert_eq!(c.anonymous().text("GET", "/healthz", &[]).await.0, 200);
    c.serving.replace(&cert, &key).unwrap();
    let old_trust = c.anonymous().send("GET", "/healthz", &[], None).await;
    assert!(old_trust.is_err(), "{:?}", old_trust.map(|r| r.status()));
    let new_trust = client(c.server.addr, &next_ca.pem, None);
    assert_eq!(new_trust.text("GET", "/healthz", &[]).await.0, 200);
}
