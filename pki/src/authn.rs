//! [`Authenticator`]: maps a peer's verified certificate chain or bearer token to an
//! [`Identity`], enforcing which trusted CA may vouch for which kind of identity (at the
//! root: the root CA for admins and clusters; at a cluster: its CA for admins and nodes,
//! the root CA for the root and admins; at an agent: its cluster's CA for that cluster).

use chrono::{DateTime, Utc};

use crate::cert::{self, subject_identity};
use crate::error::PkiError;
use crate::token::{TokenError, TokenStore, TokenUsage};
use crate::Identity;

/// A kind of identity a CA may vouch for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vouch {
    /// Administrators ([`Identity::Admin`]).
    Admin,
    /// Any cluster ([`Identity::Cluster`]).
    Cluster,
    /// The cluster of this name only.
    ClusterNamed(String),
    /// Worker nodes ([`Identity::Node`]).
    Node,
    /// The root's proxy ([`Identity::Root`]).
    Root,
}

impl Vouch {
    /// Whether this kind covers `identity`.
    pub fn covers(&self, identity: &Identity) -> bool {
        match (self, identity) {
            (Vouch::Admin, Identity::Admin { .. })
            | (Vouch::Cluster, Identity::Cluster { .. })
            | (Vouch::Node, Identity::Node { .. })
            | (Vouch::Root, Identity::Root) => true,
            (Vouch::ClusterNamed(wanted), Identity::Cluster { name }) => wanted == name,
            _ => false,
        }
    }
}

/// A CA trusted to vouch for some kinds of identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// The CA's certificate (PEM).
    pub ca_pem: String,
    /// The kinds of identity its certificates may carry.
    pub allows: Vec<Vouch>,
}

/// Why a credential was refused. Logged by the server; clients only learn
/// "Unauthorized".
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// The peer presented no certificate.
    #[error("no client certificate was presented")]
    NoCertificate,
    /// The peer's certificate does not parse, or is no client certificate.
    #[error("invalid client certificate: {reason}")]
    InvalidCertificate {
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate's issuer is no trusted CA.
    #[error("the client certificate was issued by {issuer:?}, which is not a trusted CA")]
    UnknownCa {
        /// The issuer's common name.
        issuer: String,
    },
    /// The certificate names a trusted CA as issuer but is not signed by its key.
    #[error("the client certificate names the trusted CA {issuer:?} as issuer but its signature does not verify with that CA's key (a foreign CA of the same name?)")]
    ForeignCa {
        /// The issuer's common name.
        issuer: String,
    },
    /// The certificate's subject carries no identity this project issues.
    #[error("the client certificate's subject (CN {common_name:?}, O {organizations:?}) carries no Oakestra identity")]
    NoIdentity {
        /// The subject's common name.
        common_name: String,
        /// The subject's organizations.
        organizations: Vec<String>,
    },
    /// The issuing CA may not vouch for this identity.
    #[error("{identity} is not vouched for by the CA {ca:?} that issued its certificate")]
    NotVouched {
        /// The identity the certificate carries (its user name).
        identity: String,
        /// The issuing CA's common name.
        ca: String,
    },
    /// The certificate is not valid yet.
    #[error("the client certificate of {identity} is not valid before {not_before}")]
    NotYetValid {
        /// The identity the certificate carries.
        identity: String,
        /// When it becomes valid.
        not_before: DateTime<Utc>,
    },
    /// The certificate has expired.
    #[error("the client certificate of {identity} expired at {not_after}")]
    Expired {
        /// The identity the certificate carries.
        identity: String,
        /// When it expired.
        not_after: DateTime<Utc>,
    },
    /// This server accepts no bearer tokens.
    #[error("bearer tokens are not accepted here")]
    NoTokens,
    /// The bearer token was refused.
    #[error("bearer token refused: {0}")]
    Token(#[from] TokenError),
}

struct TrustedCa {
    pem: String,
    der: Vec<u8>,
    common_name: String,
    allows: Vec<Vouch>,
}

/// Maps credentials to identities: client certificates of trusted CAs, and admin tokens
/// of a [`TokenStore`].
pub struct Authenticator {
    cas: Vec<TrustedCa>,
    tokens: Option<TokenStore>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cas: Vec<_> = self
            .cas
            .iter()
            .map(|ca| (&ca.common_name, &ca.allows))
            .collect();
        f.debug_struct("Authenticator")
            .field("cas", &cas)
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl Authenticator {
    /// An authenticator trusting `trust` and, when given, the admin tokens of `tokens`.
    /// An error when a CA's PEM is not a certificate.
    pub fn new(trust: Vec<Trust>, tokens: Option<TokenStore>) -> Result<Authenticator, PkiError> {
        let cas = trust
            .into_iter()
            .map(|t| {
                let der = cert::pem_to_der(&t.ca_pem, "a trusted CA certificate")?;
                let parsed = cert::parse_der(&der, "a trusted CA certificate")?;
                let (common_name, _) = cert::subject_fields(parsed.subject());
                Ok(TrustedCa {
                    pem: t.ca_pem,
                    der: der.clone(),
                    common_name,
                    allows: t.allows,
                })
            })
            .collect::<Result<_, PkiError>>()?;
        Ok(Authenticator { cas, tokens })
    }

    /// The CA certificates (PEM) a TLS server verifies client certificates against.
    pub fn client_roots_pem(&self) -> Vec<String> {
        self.cas.iter().map(|ca| ca.pem.clone()).collect()
    }

    /// The identity of a peer whose chain (leaf first, DER) TLS already verified against
    /// [`client_roots_pem`](Self::client_roots_pem): the trusted CA that issued the leaf
    /// (its subject is the leaf's issuer and its key verifies the leaf's signature) must
    /// vouch for the identity the leaf's subject carries, and the leaf must be valid at
    /// `now`.
    pub fn from_certificate(
        &self,
        chain_der: &[Vec<u8>],
        now: DateTime<Utc>,
    ) -> Result<Identity, AuthnError> {
        let leaf_der = chain_der.first().ok_or(AuthnError::NoCertificate)?;
        let leaf = cert::parse_der(leaf_der, "the client certificate").map_err(|e| {
            AuthnError::InvalidCertificate {
                reason: e.to_string(),
            }
        })?;
        if leaf.is_ca() {
            return Err(AuthnError::InvalidCertificate {
                reason: "it is a CA certificate".into(),
            });
        }
        let (issuer, _) = cert::subject_fields(leaf.issuer());
        let mut named = false;
        let ca = self
            .cas
            .iter()
            .find(|ca| {
                let Ok(ca_cert) = cert::parse_der(&ca.der, "a trusted CA certificate") else {
                    return false;
                };
                if ca_cert.subject().as_raw() != leaf.issuer().as_raw() {
                    return false;
                }
                named = true;
                leaf.verify_signature(Some(ca_cert.public_key())).is_ok()
            })
            .ok_or_else(|| match named {
                true => AuthnError::ForeignCa {
                    issuer: issuer.clone(),
                },
                false => AuthnError::UnknownCa {
                    issuer: issuer.clone(),
                },
            })?;
        let identity = subject_identity(&leaf).ok_or_else(|| {
            let (common_name, organizations) = cert::subject_fields(leaf.subject());
            AuthnError::NoIdentity {
                common_name,
                organizations,
            }
        })?;
        if !ca.allows.iter().any(|v| v.covers(&identity)) {
            return Err(AuthnError::NotVouched {
                identity: identity.user(),
                ca: ca.common_name.clone(),
            });
        }
        let validity = leaf.validity();
        let at = |t: x509_parser::time::ASN1Time| {
            DateTime::from_timestamp(t.timestamp(), 0).unwrap_or_default()
        };
        if now.timestamp() < validity.not_before.timestamp() {
            return Err(AuthnError::NotYetValid {
                identity: identity.user(),
                not_before: at(validity.not_before),
            });
        }
        if now.timestamp() > validity.not_after.timestamp() {
            return Err(AuthnError::Expired {
                identity: identity.user(),
                not_after: at(validity.not_after),
            });
        }
        Ok(identity)
    }

    /// The identity of a bearer token `<id>.<secret>`: an admin token of the store is
    /// `Identity::Admin { name: "oakestra:token:<id>" }`; anything else is refused.
    pub fn from_bearer(&self, token: &str, now: DateTime<Utc>) -> Result<Identity, AuthnError> {
        let store = self.tokens.as_ref().ok_or(AuthnError::NoTokens)?;
        let info = store.verify(token, TokenUsage::Admin, now)?;
        Ok(Identity::Admin {
            name: format!("{TOKEN_USER_PREFIX}{}", info.id),
        })
    }
}

/// How the user name of an admin token starts.
pub const TOKEN_USER_PREFIX: &str = "oakestra:token:";
