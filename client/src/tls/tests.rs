//! A real TLS server on 127.0.0.1 (tokio-rustls + hyper) that answers every request
//! with the client certificate it saw and the `Authorization` header it got.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

use super::*;
use crate::testing::{Ca, Leaf};
use crate::Client;

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// Serve TLS with `server` (signed by a CA) on a free port; client certificates are
/// optional and checked against `client_ca`. One request per connection, so every
/// request is a new handshake.
async fn serve(server: &Leaf, client_ca: &Ca) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(client_ca.pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake (wrong CA on the client's side) ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| b64(c));
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let auth = req
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap().to_string());
                    let body = json!({"cert": cert, "auth": auth}).to_string();
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(body)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn options(ca: &Ca) -> TlsOptions {
    TlsOptions {
        ca_pem: Some(ca.pem.clone()),
        ..TlsOptions::default()
    }
}

#[tokio::test]
async fn the_server_sees_the_client_certificate_and_the_token() {
    let ca = Ca::new("test CA");
    let addr = serve(&ca.leaf("server", &["127.0.0.1"]), &ca).await;
    let me = ca.leaf("admin", &[]);
    let tls = TlsOptions {
        identity: Some(ClientCertificate::new(&me.cert_pem, &me.key_pem).unwrap()),
        bearer: Some("abc123.0123456789abcdef".into()),
        ..options(&ca)
    };
    let client = Client::with_tls(&format!("https://{addr}"), tls).unwrap();
    let seen = client.get_json("/").await.unwrap();
    assert_eq!(seen["cert"], Value::from(b64(&me.der)), "{seen}");
    assert_eq!(seen["auth"], "Bearer abc123.0123456789abcdef", "{seen}");

    // Without a client certificate or token the server sees neither.
    let anonymous = Client::with_tls(&format!("https://{addr}"), options(&ca)).unwrap();
    let seen = anonymous.get_json("/").await.unwrap();
    assert_eq!(seen, json!({"cert": null, "auth": null}));
}

#[tokio::test]
async fn a_server_of_another_ca_is_refused_with_the_reason() {
    let theirs = Ca::new("their CA");
    let addr = serve(&theirs.leaf("server", &["127.0.0.1"]), &theirs).await;
    let mine = Ca::new("my CA");
    let client = Client::with_tls(&format!("https://{addr}"), options(&mine)).unwrap();
    let e = client.get_json("/").await.unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
}

#[tokio::test]
async fn the_tls_server_name_is_the_name_checked() {
    let ca = Ca::new("test CA");
    let addr = serve(&ca.leaf("server", &["api.internal"]), &ca).await;
    let url = format!("https://{addr}");
    // Dialled by IP, the certificate (only for api.internal) does not fit...
    let e = Client::with_tls(&url, options(&ca))
        .unwrap()
        .get_json("/")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("certificate not valid for name \"127.0.0.1\""),
        "{e}"
    );
    // ... unless the name to check is given.
    let named = TlsOptions {
        server_name: Some("api.internal".into()),
        ..options(&ca)
    };
    Client::with_tls(&url, named)
        .unwrap()
        .get_json("/")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_replaced_certificate_is_presented_by_the_next_connection() {
    let ca = Ca::new("test CA");
    let addr = serve(&ca.leaf("server", &["127.0.0.1"]), &ca).await;
    let (old, new) = (ca.leaf("node-1", &[]), ca.leaf("node-1", &[]));
    let identity = ClientCertificate::new(&old.cert_pem, &old.key_pem).unwrap();
    let tls = TlsOptions {
        identity: Some(identity.clone()),
        ..options(&ca)
    };
    let client = Client::with_tls(&format!("https://{addr}"), tls).unwrap();
    let seen = client.get_json("/").await.unwrap();
    assert_eq!(seen["cert"], Value::from(b64(&old.der)));

    identity.replace(&new.cert_pem, &new.key_pem).unwrap();
    assert_eq!(identity.leaf_der(), new.der);
    let seen = client.get_json("/").await.unwrap();
    assert_eq!(seen["cert"], Value::from(b64(&new.der)), "the renewed one");

    // A bad replacement is refused and the current certificate stays.
    let e = identity.replace(&new.cert_pem, &old.key_pem).unwrap_err();
    assert!(
        matches!(e, pki::LiveCertificateError::KeyMismatch { .. }),
        "{e}"
    );
    assert_eq!(identity.leaf_der(), new.der);
}

#[test]
fn unusable_settings_say_what_is_wrong() {
    let ca = Ca::new("test CA");
    let me = ca.leaf("admin", &[]);
    let e = Client::new("https://127.0.0.1:1").unwrap_err().to_string();
    assert!(
        e.contains("https://127.0.0.1:1") && e.contains("pass a kubeconfig"),
        "{e}"
    );
    let cases: [(Result<ClientCertificate, pki::LiveCertificateError>, &str); 3] = [
        (
            ClientCertificate::new("not pem", &me.key_pem),
            "certificate chain is not valid PEM (no CERTIFICATE block)",
        ),
        (
            ClientCertificate::new(&me.cert_pem, "garbage"),
            "the key is not usable",
        ),
        (
            ClientCertificate::new(&me.cert_pem, &ca.leaf("other", &[]).key_pem),
            "the key does not match the certificate",
        ),
    ];
    for (result, expected) in cases {
        let e = result.unwrap_err().to_string();
        assert!(e.contains(expected), "{e:?} lacks {expected:?}");
    }
    let bad_ca = TlsOptions {
        ca_pem: Some("nothing".into()),
        ..TlsOptions::default()
    };
    let e = Client::with_tls("https://x:1", bad_ca)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the CA is not valid PEM (no CERTIFICATE block)"),
        "{e}"
    );
}
