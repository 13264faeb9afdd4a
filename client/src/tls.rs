//! TLS and credentials of a [`Client`](crate::Client): which CA it trusts, which client
//! certificate it presents, which bearer token it sends.
//!
//! This module owns the rustls `ClientConfig` of every client: built with the ring
//! provider (never a process default), trusting only the CA it is given (no built-in
//! roots), speaking HTTP/1.1. [`ClientCertificate`] is the client's identity, shared by
//! all its connections; [`ClientCertificate::replace`] swaps in a renewed certificate
//! for the connections made from then on.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The TLS settings and credentials of a client ([`Client::with_tls`](crate::Client::with_tls)).
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM of the CA certificates to trust, and only these (no built-in roots); required
    /// for an `https://` server.
    pub ca_pem: Option<String>,
    /// The client certificate to present, if the server asks for one.
    pub identity: Option<ClientCertificate>,
    /// A token sent as `Authorization: Bearer <token>` with every request.
    pub bearer: Option<String>,
    /// The name the server's certificate must carry, when it is not the URL's host
    /// (kubeconfig's `tls-server-name`).
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "…"))
            .field("identity", &self.identity)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Why TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The client certificate or its key, or the CA, is not usable PEM.
    #[error(transparent)]
    Certificate(#[from] pki::LiveCertificateError),
    /// A CA certificate was refused as a trust anchor.
    #[error("the CA certificate cannot be trusted: {0}")]
    Ca(rustls::Error),
    /// The server is `https://` but no CA was given.
    #[error(
        "{server} is an https URL but no CA to trust was given: pass a kubeconfig \
         (--kubeconfig) or a CA"
    )]
    NoCa {
        /// The server URL.
        server: String,
    },
    /// The bearer token cannot be sent in an HTTP header.
    #[error("the bearer token contains characters not allowed in an HTTP header")]
    BadToken,
    /// The server name to verify is not a DNS name or IP address.
    #[error("the TLS server name {0:?} is not a DNS name or an IP address")]
    BadServerName(String),
    /// rustls refused to build the configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider of every TLS config of this crate.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client certificate chain and its key, shared by every connection of the clients it
/// was given to (a handle: clones share it); `replace` swaps in a renewed one for the
/// connections made from then on.
pub type ClientCertificate = pki::LiveCertificate;

/// The rustls config of a client with `tls`: only `tls.ca_pem`'s roots (none without
/// one: then no server certificate is accepted), the client certificate if any,
/// HTTP/1.1.
pub(crate) fn client_config(tls: &TlsOptions) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    if let Some(pem) = &tls.ca_pem {
        for cert in pki::certificates_of(pem, "CA")? {
            roots.add(cert).map_err(TlsError::Ca)?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &tls.server_name {
        Some(name) if !roots.is_empty() => {
            let name = ServerName::try_from(name.clone())
                .map_err(|_| TlsError::BadServerName(name.clone()))?;
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NamedServer { inner, name }))
        }
        _ => builder.with_root_certificates(roots),
    };
    let mut config = match &tls.identity {
        Some(identity) => builder.with_client_cert_resolver(Arc::new(identity.clone())),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if tls.identity.is_some() {
        // A resumed session presents no certificate: the server would go on seeing the
        // one of the first handshake after a `replace`.
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(config)
}

/// Verifies the server's certificate for a fixed name (kubeconfig's `tls-server-name`)
/// instead of the URL's host; otherwise exactly the `WebPki` verification.
#[derive(Debug)]
struct NamedServer {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
