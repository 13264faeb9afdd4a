//! The API server's side of authentication: [`pki::Authenticator`] behind the
//! [`apiserver::auth::Authenticate`] seam, and the [`Security`] a tier serves with.

use std::sync::Arc;

use apiserver::auth::{Authenticate, Security, ServingCertificate};
use pki::{Authenticator, Identity};

use crate::TrustError;

/// [`pki::Authenticator`] as the API server asks for it.
pub struct TierAuthenticator(pub Authenticator);

impl Authenticate for TierAuthenticator {
    fn certificate(&self, chain_der: &[Vec<u8>]) -> Result<Identity, String> {
        self.0
            .from_certificate(chain_der, chrono::Utc::now())
            .map_err(|e| e.to_string())
    }

    fn bearer(&self, token: &str) -> Result<Identity, String> {
        self.0
            .from_bearer(token, chrono::Utc::now())
            .map_err(|e| e.to_string())
    }
}

/// The security of an API server: it serves `serving` (a certificate and key), and
/// authenticates clients with `authenticator`; `routes` are the tier's own routes
/// (CA fetch, join, renew, log proxy) served beside the API.
pub fn security(
    serving: &pki::CertifiedKey,
    authenticator: Authenticator,
    routes: axum::Router,
) -> Result<(Security, ServingCertificate), TrustError> {
    let handle = ServingCertificate::new(&serving.cert_pem, &serving.key_pem)
        .map_err(|e| TrustError::Tls(e.to_string()))?;
    let security = Security {
        serving: handle.clone(),
        client_cas_pem: authenticator.client_roots_pem(),
        authenticator: Arc::new(TierAuthenticator(authenticator)),
        routes,
    };
    Ok((security, handle))
}
