//! A certificate chain and its key as rustls presents them, replaceable while in use:
//! the serving certificate of a server and the client certificate of a client are both
//! a [`LiveCertificate`] (it resolves for either side), so a renewed certificate is
//! presented by new connections without a restart, and connections already open keep
//! the one they were made with.

use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

/// Why a certificate chain or its key cannot be presented.
#[derive(Debug, thiserror::Error)]
pub enum LiveCertificateError {
    /// A PEM text is not certificates.
    #[error("the {what} is not valid PEM ({reason}); expected one or more CERTIFICATE blocks, the leaf first")]
    Certificate {
        /// What it should have been, e.g. "serving certificate".
        what: &'static str,
        /// What the PEM reader said.
        reason: String,
    },
    /// The key is not a PEM private key the ring provider can sign with.
    #[error(
        "the key is not usable ({reason}); expected a PKCS#8 ECDSA P-256 key in PEM (PRIVATE KEY)"
    )]
    Key {
        /// What the reader or the provider said.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("the key does not match the certificate's public key ({reason})")]
    KeyMismatch {
        /// What rustls said.
        reason: String,
    },
}

/// Every certificate of a PEM text (`what` names it in errors): at least one.
pub fn certificates_of(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, LiveCertificateError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LiveCertificateError::Certificate {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(LiveCertificateError::Certificate {
            what,
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// A certificate chain and key presented to peers: a cloneable handle (clones share
/// it) that rustls asks at each new handshake.
#[derive(Clone)]
pub struct LiveCertificate {
    current: Arc<RwLock<Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for LiveCertificate {
    /// The chain's length, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCertificate")
            .field("chain_len", &self.current().cert.len())
            .finish_non_exhaustive()
    }
}

impl LiveCertificate {
    /// Present `cert_chain_pem` (leaf first) with `key_pem` (PKCS#8; SEC1 and PKCS#1
    /// keys work too).
    pub fn new(cert_chain_pem: &str, key_pem: &str) -> Result<Self, LiveCertificateError> {
        Ok(LiveCertificate {
            current: Arc::new(RwLock::new(Arc::new(certified_key(
                cert_chain_pem,
                key_pem,
            )?))),
        })
    }

    /// Present `cert_chain_pem` with `key_pem` to new connections from now on. On an
    /// error the current certificate stays.
    pub fn replace(&self, cert_chain_pem: &str, key_pem: &str) -> Result<(), LiveCertificateError> {
        let next = Arc::new(certified_key(cert_chain_pem, key_pem)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// The DER of the leaf certificate presented now.
    pub fn leaf_der(&self) -> Vec<u8> {
        self.current().cert[0].to_vec()
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The chain and key, checked to belong together.
fn certified_key(
    cert_chain_pem: &str,
    key_pem: &str,
) -> Result<CertifiedKey, LiveCertificateError> {
    let chain = certificates_of(cert_chain_pem, "certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        LiveCertificateError::Key {
            reason: e.to_string(),
        }
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        LiveCertificateError::Key {
            reason: e.to_string(),
        }
    })?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| LiveCertificateError::KeyMismatch {
            reason: e.to_string(),
        })?;
    Ok(certified)
}

impl ResolvesServerCert for LiveCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for LiveCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
