//! The parsers that face the network, fed arbitrary input (bolero): join tokens and
//! bearer credentials, CSRs and certificates, label and field selectors, kubeconfigs,
//! and whole writes (create, merge patch, status) through the API server's routes and
//! validation. Each must answer a value or a typed error: never panic, never a 5xx.
//!
//! `cargo test` runs a bounded number of inputs per target (`OAKESTRA_FUZZ_ITERATIONS`,
//! default 500). A longer run, e.g. before a release:
//! `OAKESTRA_FUZZ_ITERATIONS=200000 cargo test --release -p e2e --test fuzz`.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;

use bolero::check;
use pki::{CertificateAuthority, Identity, Usage};
use serde_json::{json, Value};

use e2e::fuzz_iterations as iterations;

/// `bytes` in a PEM block labelled `label`, so the parser behind the armour sees them.
fn pem(label: &str, bytes: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
}

/// `valid` with bytes of `noise` mixed in at positions `noise` picks: inputs near a
/// valid encoding reach deeper than random bytes do.
fn mutate(valid: &[u8], noise: &[u8]) -> Vec<u8> {
    let mut out = valid.to_vec();
    for (i, b) in noise.iter().enumerate() {
        let at = (i * 131 + usize::from(*b) * 7) % out.len();
        out[at] ^= b | 1;
    }
    out
}

fn der_of(pem_text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[test]
fn join_tokens_and_bearer_credentials() {
    check!()
        .with_iterations(iterations())
        .with_type::<String>()
        .for_each(|text| {
            if let Ok(token) = text.parse::<pki::JoinToken>() {
                // What parses prints back to what parses to the same.
                assert_eq!(token.to_string().parse::<pki::JoinToken>().unwrap(), token);
            }
            let _ = pki::parse_bearer(text);
        });
}

#[test]
fn csrs_a_joiner_sends() {
    let ca = CertificateAuthority::create("fuzz CA").unwrap();
    let (_, valid) = pki::Csr::generate().unwrap();
    let valid = der_of(&valid);
    let usage = Usage::Client(Identity::Node { name: "n1".into() });
    let hour = Duration::from_secs(3600);
    // A failing input panics; nothing is shared between inputs to observe half-done.
    let ca = AssertUnwindSafe(ca);
    check!()
        .with_iterations(iterations())
        .for_each(move |noise: &[u8]| {
            let _ = ca.sign_csr(&String::from_utf8_lossy(noise), usage.clone(), hour);
            let _ = ca.sign_csr(&pem("CERTIFICATE REQUEST", noise), usage.clone(), hour);
            if !noise.is_empty() {
                let near = pem("CERTIFICATE REQUEST", &mutate(&valid, noise));
                if let Ok(cert) = ca.sign_csr(&near, usage.clone(), hour) {
                    // Whatever was asked for, the certificate says what the signer chose.
                    let info = pki::CertInfo::parse(&cert).unwrap();
                    assert_eq!(info.common_name, "oakestra:node:n1");
                }
            }
        });
}

#[test]
fn certificates_a_peer_presents() {
    let ca = CertificateAuthority::create("fuzz CA").unwrap();
    let valid = ca
        .issue_client(&Identity::admin(), Duration::from_secs(3600))
        .unwrap();
    let valid = der_of(&valid.cert_pem);
    let authenticator = pki::Authenticator::new(
        vec![pki::Trust {
            ca_pem: ca.cert_pem().to_string(),
            allows: vec![pki::Vouch::Admin],
        }],
        None,
    )
    .unwrap();
    let authenticator = AssertUnwindSafe(authenticator);
    check!()
        .with_iterations(iterations())
        .for_each(move |noise: &[u8]| {
            let now = chrono::Utc::now();
            let _ = authenticator.from_certificate(&[noise.to_vec()], now);
            let _ = pki::CertInfo::parse(&pem("CERTIFICATE", noise));
            if !noise.is_empty() {
                let near = mutate(&valid, noise);
                // A changed certificate no longer carries the CA's signature.
                if near != valid {
                    assert!(authenticator.from_certificate(&[near], now).is_err());
                }
            }
        });
}

#[test]
fn label_and_field_selectors() {
    let object = json!({"metadata": {"name": "x", "namespace": "default", "labels": {"app": "web"}},
                        "spec": {"node": "n1", "cluster": "a"}});
    check!()
        .with_iterations(iterations())
        .with_type::<String>()
        .for_each(|text| {
            if let Ok(labels) = apiserver::object::LabelSelector::parse(text) {
                let _ = labels.matches(&object);
            }
            if let Ok(fields) = apiserver::object::FieldSelector::parse(text) {
                let _ = fields.matches(&object);
            }
        });
}

#[test]
fn kubeconfigs() {
    let path = Path::new("/nonexistent/fuzz.kubeconfig");
    check!()
        .with_iterations(iterations())
        .with_type::<String>()
        .for_each(|text| {
            if let Ok(config) = client::kubeconfig::Kubeconfig::parse(path, text) {
                let _ = config.resolve(None);
            }
        });
}

/// Fields of a Service that writes set, and the values they are set to.
const POINTERS: &[&str] = &[
    "/apiVersion",
    "/kind",
    "/metadata",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/labels",
    "/metadata/labels/app",
    "/metadata/annotations",
    "/metadata/resourceVersion",
    "/metadata/finalizers",
    "/spec",
    "/spec/replicas",
    "/spec/template",
    "/spec/template/runtime",
    "/spec/template/image",
    "/spec/template/executable",
    "/spec/template/command",
    "/spec/template/env",
    "/spec/template/ports",
    "/spec/template/resources",
    "/spec/template/resources/cpuMillicores",
    "/spec/template/resources/memoryMiB",
    "/spec/serviceIPs",
    "/status",
    "/status/conditions",
];

fn value(kind: u8, text: &str) -> Value {
    match kind % 12 {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(1.5),
        4 => json!(text),
        5 => json!(""),
        6 => json!([text, 1, null]),
        7 => json!({ text: text }),
        8 => json!(true),
        9 => json!([{"name": text, "value": text}]),
        10 => json!({"type": "Ready", "status": text}),
        _ => json!(0),
    }
}

/// Set `pointer` in `object` to `value`, making the objects on the way.
fn set(object: &mut Value, pointer: &str, value: Value) {
    let mut at = object;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        let map = at.as_object_mut().expect("an object");
        if i + 1 == parts.len() {
            map.insert(part.to_string(), value);
            return;
        }
        at = map.entry(part.to_string()).or_insert_with(|| json!({}));
    }
}

#[test]
fn writes_through_the_api_server() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = runtime.block_on(async {
        apiserver::Server::start(
            "127.0.0.1:0".parse().unwrap(),
            apiserver::StoreConfig::Embedded(dir.path().to_path_buf()),
            apiserver::ServerConfig::default(),
        )
        .await
        .unwrap()
    });
    let local = AssertUnwindSafe(server.local());
    let runtime = AssertUnwindSafe(runtime);
    let services = "/apis/oakestra.io/v1/namespaces/default/services";
    let base = json!({
        "apiVersion": "oakestra.io/v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "template": {"runtime": "process", "executable": "/bin/true"}},
    });
    let send = |method: &str, path: &str, content_type: &str, body: Vec<u8>| {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(bytes::Bytes::from(body))
            .unwrap();
        runtime.block_on((*local)(request)).status().as_u16()
    };
    assert_eq!(
        send(
            "POST",
            services,
            "application/json",
            base.to_string().into_bytes()
        ),
        201
    );
    check!()
        .with_iterations(iterations())
        .with_type::<(Vec<(u8, u8)>, String)>()
        .for_each(|(edits, text)| {
            let mut object = base.clone();
            object["metadata"]["name"] = json!(format!("web-{}", edits.len()));
            for (field, kind) in edits {
                let pointer = POINTERS[usize::from(*field) % POINTERS.len()];
                set(&mut object, pointer, value(*kind, text));
            }
            let body = object.to_string().into_bytes();
            let merge = "application/merge-patch+json";
            let codes = [
                send("POST", services, "application/json", body.clone()),
                send("PATCH", &format!("{services}/web"), merge, body.clone()),
                send(
                    "PATCH",
                    &format!("{services}/web/status"),
                    merge,
                    body.clone(),
                ),
                send(
                    "POST",
                    services,
                    "application/json",
                    text.clone().into_bytes(),
                ),
            ];
            for code in codes {
                assert!(code < 500, "{code} for {object}");
            }
        });
}
