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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{Usage, Validity};
    use crate::CertificateAuthority;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn leaf(ca: &CertificateAuthority, identity: &Identity) -> Vec<Vec<u8>> {
        let issued = ca.issue_client(identity, DAY).unwrap();
        vec![cert::pem_to_der(&issued.cert_pem, "leaf").unwrap()]
    }

    #[test]
    fn vouch_table() {
        let c1 = Identity::Cluster { name: "c1".into() };
        let cases = [
            (Vouch::Admin, Identity::admin(), true),
            (Vouch::Admin, c1.clone(), false),
            (Vouch::Cluster, c1.clone(), true),
            (Vouch::ClusterNamed("c1".into()), c1.clone(), true),
            (Vouch::ClusterNamed("c2".into()), c1.clone(), false),
            (Vouch::Node, Identity::Node { name: "n".into() }, true),
            (Vouch::Node, Identity::Root, false),
            (Vouch::Root, Identity::Root, true),
            (Vouch::Root, Identity::System, false),
        ];
        for (vouch, identity, covered) in cases {
            assert_eq!(vouch.covers(&identity), covered, "{vouch:?} {identity}");
        }
    }

    #[test]
    fn certificates_map_to_identities_only_when_their_ca_vouches_for_them() {
        let root = CertificateAuthority::create("oakestra root CA").unwrap();
        let foreign = CertificateAuthority::create("oakestra root CA").unwrap();
        let other = CertificateAuthority::create("somebody's CA").unwrap();
        let authn = Authenticator::new(
            vec![Trust {
                ca_pem: root.cert_pem().to_string(),
                allows: vec![Vouch::Admin, Vouch::Cluster],
            }],
            None,
        )
        .unwrap();
        assert_eq!(authn.client_roots_pem(), vec![root.cert_pem().to_string()]);
        let c1 = Identity::Cluster { name: "c1".into() };
        let node = Identity::Node { name: "n1".into() };
        let expired = root
            .issue(
                &Usage::Client(Identity::admin()),
                Validity {
                    not_before: Utc::now() - chrono::Duration::days(2),
                    not_after: Utc::now() - chrono::Duration::days(1),
                },
            )
            .unwrap();
        let server = root.issue_server(&["root.local".into()], DAY).unwrap();
        let der = |pem: &str| vec![cert::pem_to_der(pem, "leaf").unwrap()];
        // (case, chain, expected identity or a piece of the error message)
        type Case<'a> = (&'a str, Vec<Vec<u8>>, Result<Identity, &'a str>);
        let cases: Vec<Case> = vec![
            (
                "admin",
                leaf(&root, &Identity::admin()),
                Ok(Identity::admin()),
            ),
            ("cluster", leaf(&root, &c1), Ok(c1.clone())),
            (
                "node",
                leaf(&root, &node),
                Err("not vouched for by the CA \"oakestra root CA\""),
            ),
            (
                "foreign key, same name",
                leaf(&foreign, &Identity::admin()),
                Err("does not verify with that CA's key"),
            ),
            (
                "unknown CA",
                leaf(&other, &Identity::admin()),
                Err("not a trusted CA"),
            ),
            ("expired", der(&expired.cert_pem), Err("expired")),
            (
                "server cert",
                der(&server.cert_pem),
                Err("carries no Oakestra identity"),
            ),
            ("the CA itself", der(root.cert_pem()), Err("CA certificate")),
            ("no certificate", vec![], Err("no client certificate")),
            (
                "garbage",
                vec![b"garbage".to_vec()],
                Err("invalid client certificate"),
            ),
        ];
        for (case, chain, expected) in cases {
            match (authn.from_certificate(&chain, Utc::now()), expected) {
                (Ok(identity), Ok(wanted)) => assert_eq!(identity, wanted, "{case}"),
                (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{case}: {e}"),
                (got, wanted) => panic!("{case}: got {got:?}, wanted {wanted:?}"),
            }
        }
        // Not valid yet: a minute before it was issued (the skew allowance) and more.
        let chain = leaf(&root, &Identity::admin());
        let before = Utc::now() - chrono::Duration::minutes(5);
        let err = authn.from_certificate(&chain, before).unwrap_err();
        assert!(matches!(err, AuthnError::NotYetValid { .. }), "{err}");
    }

    #[test]
    fn at_a_cluster_each_ca_vouches_for_its_own_kinds() {
        let root = CertificateAuthority::create("oakestra root CA").unwrap();
        let cluster = CertificateAuthority::create("oakestra cluster c1 CA").unwrap();
        let trust = |ca: &CertificateAuthority, allows| Trust {
            ca_pem: ca.cert_pem().to_string(),
            allows,
        };
        let authn = Authenticator::new(
            vec![
                trust(&cluster, vec![Vouch::Admin, Vouch::Node]),
                trust(&root, vec![Vouch::Root, Vouch::Admin]),
            ],
            None,
        )
        .unwrap();
        let node = Identity::Node { name: "n1".into() };
        let now = Utc::now();
        assert_eq!(
            authn.from_certificate(&leaf(&cluster, &node), now).unwrap(),
            node
        );
        assert_eq!(
            authn
                .from_certificate(&leaf(&root, &Identity::Root), now)
                .unwrap(),
            Identity::Root
        );
        assert!(authn.from_certificate(&leaf(&root, &node), now).is_err());
        assert!(authn
            .from_certificate(&leaf(&cluster, &Identity::Root), now)
            .is_err());
        assert!(matches!(
            authn.from_bearer("abc123.abcdefghij012345", now),
            Err(AuthnError::NoTokens)
        ));
    }

    #[test]
    fn admin_tokens_are_admins_and_join_tokens_are_refused_as_bearers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let ca = CertificateAuthority::create("oakestra root CA").unwrap();
        let cli = TokenStore::open(&path).unwrap();
        let admin = cli
            .create(TokenUsage::Admin, &ca.hash(), None, "ci")
            .unwrap();
        let join = cli
            .create(TokenUsage::Join, &ca.hash(), None, "c1")
            .unwrap();
        let authn = Authenticator::new(vec![], Some(TokenStore::open(&path).unwrap())).unwrap();
        let now = Utc::now();
        assert_eq!(
            authn.from_bearer(&admin.bearer(), now).unwrap(),
            Identity::Admin {
                name: format!("oakestra:token:{}", admin.id)
            }
        );
        let err = authn.from_bearer(&join.bearer(), now).unwrap_err();
        assert!(
            err.to_string().contains("is for join only, not for admin"),
            "{err}"
        );
        assert!(matches!(
            err,
            AuthnError::Token(TokenError::WrongUsage { .. })
        ));
        let err = authn
            .from_bearer("zzzzzz.abcdefghij012345", now)
            .unwrap_err();
        assert!(
            matches!(err, AuthnError::Token(TokenError::Unknown { .. })),
            "{err}"
        );
        let err = authn.from_bearer(&admin.to_string(), now).unwrap_err();
        assert!(
            matches!(err, AuthnError::Token(TokenError::BadId { .. })),
            "{err}"
        );
    }
}
