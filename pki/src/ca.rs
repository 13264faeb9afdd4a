//! [`CertificateAuthority`]: a tier's CA (ECDSA P-256, kept as `ca.crt` and `ca.key`),
//! and the certificates it issues: server certificates for the names clients dial,
//! client certificates carrying an [`Identity`], and certificates for a joiner's signing
//! request ([`CertificateAuthority::sign_csr`]), of which only the public key is taken.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::cert::{self, CertifiedKey};
use crate::error::PkiError;
use crate::files::{self, PUBLIC};
use crate::secret;
use crate::Identity;

/// The file name of a CA's certificate in its directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The file name of a CA's private key in its directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// How long a CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far in the past a certificate's validity starts, for peers whose clocks lag.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(1);

/// What a certificate is for; the signer decides it, never the requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage {
    /// A client certificate carrying this identity (extendedKeyUsage clientAuth).
    Client(Identity),
    /// A server certificate for these names: IP addresses or DNS names, the first one
    /// also the common name (extendedKeyUsage serverAuth).
    Server {
        /// Every name or address clients dial.
        sans: Vec<String>,
    },
}

/// A validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) not_before: DateTime<Utc>,
    pub(crate) not_after: DateTime<Utc>,
}

impl Validity {
    /// From a minute ago (clock skew) to `lifetime` from now.
    pub(crate) fn starting_now(lifetime: Duration) -> Result<Validity, PkiError> {
        let now = Utc::now();
        let lifetime = chrono::Duration::from_std(lifetime).map_err(|e| PkiError::Validity {
            reason: format!("lifetime {lifetime:?}: {e}"),
        })?;
        Ok(Validity {
            not_before: now - CLOCK_SKEW,
            not_after: now + lifetime,
        })
    }

    fn apply(self, params: &mut CertificateParams) -> Result<(), PkiError> {
        if self.not_after <= self.not_before {
            return Err(PkiError::Validity {
                reason: format!(
                    "it ends ({}) before it starts ({})",
                    self.not_after, self.not_before
                ),
            });
        }
        let at = |t: DateTime<Utc>| {
            ASN1Time::from_timestamp(t.timestamp())
                .map(|t| t.to_datetime())
                .map_err(|e| PkiError::Validity {
                    reason: format!("{t}: {e}"),
                })
        };
        params.not_before = at(self.not_before)?;
        params.not_after = at(self.not_after)?;
        Ok(())
    }
}

/// A certificate authority: its certificate and the key it signs with.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    common_name: String,
    hash: String,
}

impl fmt::Debug for CertificateAuthority {
    /// Shows the name and the hash, never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("common_name", &self.common_name)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new CA: a fresh ECDSA P-256 key, a self-signed certificate valid for 10 years
    /// with basicConstraints CA:true (critical, no intermediates below it), keyUsage
    /// keyCertSign and cRLSign, and a subject key identifier.
    pub fn create(common_name: &str) -> Result<CertificateAuthority, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(PkiError::generate("generate the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial()?);
        Validity::starting_now(CA_LIFETIME)?.apply(&mut params)?;
        let cert = params
            .self_signed(&key)
            .map_err(PkiError::generate("sign the CA certificate"))?;
        CertificateAuthority::from_parts(cert.pem(), key, "the new CA certificate")
    }

    /// Loads the CA kept in `dir` (`ca.crt`, `ca.key`), checking that the key belongs to
    /// the certificate and that the certificate is a CA.
    pub fn load(dir: &Path) -> Result<CertificateAuthority, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = files::read_string(&cert_path)?;
        let key_pem = files::read_string(&key_path)?;
        let (key, der) = cert::load_pair(&cert_path, &cert_pem, &key_path, &key_pem)?;
        let is_ca = cert::parse_der(&der, &cert_path.display().to_string())?.is_ca();
        if !is_ca {
            return Err(PkiError::NotCa { path: cert_path });
        }
        CertificateAuthority::from_parts(cert_pem, key, &cert_path.display().to_string())
    }

    /// Loads the CA kept in `dir`, or creates one (and the directory, 0700) when there is
    /// none; `true` when it was created. One of the two files without the other is an
    /// error: a new CA would silently break every peer's trust.
    pub fn load_or_create(
        dir: &Path,
        common_name: &str,
    ) -> Result<(CertificateAuthority, bool), PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Ok((CertificateAuthority::load(dir)?, false)),
            (false, false) => {
                let ca = CertificateAuthority::create(common_name)?;
                ca.save(dir)?;
                Ok((ca, true))
            }
            (true, false) => Err(PkiError::HalfCa {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(PkiError::HalfCa {
                present: key_path,
                missing: cert_path,
            }),
        }
    }

    /// Writes `dir/ca.key` (0600) and `dir/ca.crt` (0644); `dir` is created (0700) when
    /// missing.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        files::create_private_dir(dir)?;
        files::write_private(
            &dir.join(CA_KEY_FILE),
            self.issuer.key().serialize_pem().as_bytes(),
        )?;
        files::write_atomic(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), PUBLIC)?;
        Ok(())
    }

    fn from_parts(
        cert_pem: String,
        key: KeyPair,
        origin: &str,
    ) -> Result<CertificateAuthority, PkiError> {
        let der = cert::pem_to_der(&cert_pem, origin)?;
        let parsed = cert::parse_der(&der, origin)?;
        let (common_name, _) = cert::subject_fields(parsed.subject());
        let hash = cert::spki_hash(parsed.public_key().raw);
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key).map_err(|e| {
            PkiError::InvalidCertificate {
                origin: origin.to_string(),
                reason: e.to_string(),
            }
        })?;
        Ok(CertificateAuthority {
            issuer,
            cert_pem,
            common_name,
            hash,
        })
    }

    /// The CA's certificate (PEM): what peers trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's pin, `sha256:<hex>` of its public key (the same as
    /// [`ca_hash`](crate::ca_hash) of [`cert_pem`](Self::cert_pem)).
    pub fn hash(&self) -> String {
        self.hash.clone()
    }

    /// The CA's common name.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// A server certificate for `sans` (each an IP address when it parses as one, else
    /// a DNS name; the first is also the common name) with a fresh key.
    pub fn issue_server(
        &self,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<CertifiedKey, PkiError> {
        let usage = Usage::Server {
            sans: sans.to_vec(),
        };
        self.issue(&usage, Validity::starting_now(lifetime)?)
    }

    /// A client certificate carrying `identity` with a fresh key; an error for the
    /// identities no certificate carries (anonymous, system).
    pub fn issue_client(
        &self,
        identity: &Identity,
        lifetime: Duration,
    ) -> Result<CertifiedKey, PkiError> {
        self.issue(
            &Usage::Client(identity.clone()),
            Validity::starting_now(lifetime)?,
        )
    }

    /// A certificate for `usage` with a fresh key, valid from `not_before` to
    /// `not_after` (e.g. one already expired, to test that it is refused).
    pub fn issue_between(
        &self,
        usage: &Usage,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<CertifiedKey, PkiError> {
        self.issue(
            usage,
            Validity {
                not_before,
                not_after,
            },
        )
    }

    /// A certificate for `usage` valid within `validity`, with a fresh key.
    pub(crate) fn issue(
        &self,
        usage: &Usage,
        validity: Validity,
    ) -> Result<CertifiedKey, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(PkiError::generate("generate a key"))?;
        let cert_pem = self.sign(usage, &key, validity)?;
        Ok(CertifiedKey {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a certificate for the public key of a signing request (PEM). The request's
    /// signature must verify with that key (the requester holds it); everything else in
    /// it (subject, names, extensions) is ignored: `usage` decides what the certificate
    /// says. Returns the certificate (PEM).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        usage: Usage,
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let public_key = verified_csr_key(csr_pem)?;
        self.sign(&usage, &public_key, Validity::starting_now(lifetime)?)
    }

    fn sign(
        &self,
        usage: &Usage,
        public_key: &impl PublicKeyData,
        validity: Validity,
    ) -> Result<String, PkiError> {
        let params = leaf_params(usage, validity)?;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(PkiError::generate("sign the certificate"))?;
        Ok(cert.pem())
    }
}

/// The public key of a signing request whose signature verifies with it.
fn verified_csr_key(csr_pem: &str) -> Result<rcgen::SubjectPublicKeyInfo, PkiError> {
    let invalid = |reason: String| PkiError::InvalidCsr { reason };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(invalid(format!(
            "it holds a {:?} block, not a CERTIFICATE REQUEST",
            pem.label
        )));
    }
    let (_, csr) =
        X509CertificationRequest::from_der(&pem.contents).map_err(|e| invalid(e.to_string()))?;
    csr.verify_signature().map_err(|_| PkiError::CsrSignature)?;
    rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| invalid(format!("its public key: {e}")))
}

/// The parameters of a leaf certificate for `usage`: the subject, the names and the
/// usages we decide, basicConstraints CA:false, the authority key identifier, a random
/// serial number.
fn leaf_params(usage: &Usage, validity: Validity) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    match usage {
        Usage::Client(identity) => {
            let (common_name, groups) = identity.subject().ok_or_else(|| PkiError::NoSubject {
                identity: identity.user(),
            })?;
            if groups.len() > 1 {
                return Err(PkiError::ManyGroups {
                    identity: identity.user(),
                });
            }
            subject.push(DnType::CommonName, common_name);
            for group in groups {
                subject.push(DnType::OrganizationName, group);
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Usage::Server { sans } => {
            let first = sans.first().ok_or(PkiError::NoNames)?;
            subject.push(DnType::CommonName, first.as_str());
            params.subject_alt_names = sans
                .iter()
                .map(|name| san(name))
                .collect::<Result<_, _>>()?;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
    }
    params.distinguished_name = subject;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    validity.apply(&mut params)?;
    Ok(params)
}

/// A subject alternative name: an IP address when `name` parses as one, else a DNS name.
fn san(name: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = name.parse() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = |reason: String| PkiError::InvalidName {
        name: name.to_string(),
        reason,
    };
    let valid_dns = !name.is_empty()
        && name.len() <= 253
        && name.split('.').enumerate().all(|(i, label)| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || (i == 0 && label == "*"))
        });
    if !valid_dns {
        return Err(invalid(
            "DNS names are dot-separated labels of letters, digits and inner hyphens".into(),
        ));
    }
    Ok(SanType::DnsName(
        name.try_into()
            .map_err(|e: rcgen::Error| invalid(e.to_string()))?,
    ))
}

/// A random 16-byte serial number (positive: its top bit is clear).
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    secret::fill(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte: the DER length stays 16
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::mode_of;
    use crate::{ca_hash, identity_of, CertInfo, Csr};
    use base64::Engine;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::ParsedExtension;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn der(pem: &str) -> Vec<u8> {
        cert::pem_to_der(pem, "test").unwrap()
    }

    fn subject_key_id(cert: &X509Certificate<'_>) -> Vec<u8> {
        cert.iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .expect("a subject key identifier")
    }

    fn authority_key_id(cert: &X509Certificate<'_>) -> Vec<u8> {
        cert.iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .expect("an authority key identifier")
    }

    #[test]
    fn a_new_ca_is_a_critical_ca_with_signing_usages_and_a_key_identifier() {
        let ca = CertificateAuthority::create("oakestra root CA").unwrap();
        assert_eq!(ca.common_name(), "oakestra root CA");
        assert_eq!(ca.hash(), ca_hash(ca.cert_pem()).unwrap());
        assert!(ca.hash().starts_with("sha256:") && ca.hash().len() == 7 + 64);
        let der = der(ca.cert_pem());
        let cert = cert::parse_der(&der, "ca").unwrap();
        let bc = cert.basic_constraints().unwrap().expect("basicConstraints");
        assert!(bc.critical && bc.value.ca);
        let ku = cert.key_usage().unwrap().expect("keyUsage").value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(!subject_key_id(&cert).is_empty());
        cert.verify_signature(None).expect("self-signed");
        let info = CertInfo::parse(ca.cert_pem()).unwrap();
        let years = (info.not_after - info.not_before).num_days() / 365;
        assert_eq!(years, 10);
        assert!(info.not_before < Utc::now() - chrono::Duration::seconds(30));
    }

    #[test]
    fn load_or_create_creates_once_then_loads_the_same_ca_with_a_private_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let (created, was_created) = CertificateAuthority::load_or_create(&dir, "c CA").unwrap();
        assert!(was_created);
        assert_eq!(mode_of(&dir.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode_of(&dir), 0o700);
        let (loaded, was_created) = CertificateAuthority::load_or_create(&dir, "c CA").unwrap();
        assert!(!was_created);
        assert_eq!(loaded.cert_pem(), created.cert_pem());
        assert_eq!(loaded.hash(), created.hash());
        // The loaded CA signs with the same key: its leaves verify against the first.
        let leaf = loaded.issue_server(&["a".into()], DAY).unwrap();
        let ca_der = der(created.cert_pem());
        let ca_cert = cert::parse_der(&ca_der, "ca").unwrap();
        let leaf_der = der(&leaf.cert_pem);
        let leaf_cert = cert::parse_der(&leaf_der, "leaf").unwrap();
        leaf_cert
            .verify_signature(Some(ca_cert.public_key()))
            .unwrap();
    }

    #[test]
    fn a_key_of_another_ca_or_half_a_ca_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let other = tmp.path().join("other");
        CertificateAuthority::create("a")
            .unwrap()
            .save(dir)
            .unwrap();
        CertificateAuthority::create("b")
            .unwrap()
            .save(&other)
            .unwrap();
        std::fs::copy(other.join(CA_KEY_FILE), dir.join(CA_KEY_FILE)).unwrap();
        let err = CertificateAuthority::load(dir).unwrap_err();
        assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
        std::fs::remove_file(dir.join(CA_KEY_FILE)).unwrap();
        let err = CertificateAuthority::load_or_create(dir, "a").unwrap_err();
        assert!(matches!(err, PkiError::HalfCa { .. }), "{err}");
        assert!(err.to_string().contains("ca.key"), "{err}");
    }

    #[test]
    fn server_certs_verify_against_the_ca_carry_its_key_id_and_every_name() {
        let ca = CertificateAuthority::create("oakestra cluster c1 CA").unwrap();
        let sans: Vec<String> = ["c1.example", "localhost", "127.0.0.1", "::1", "*.svc.local"]
            .map(String::from)
            .to_vec();
        let issued = ca.issue_server(&sans, DAY).unwrap();
        let ca_der = der(ca.cert_pem());
        let ca_cert = cert::parse_der(&ca_der, "ca").unwrap();
        let leaf_der = der(&issued.cert_pem);
        let leaf = cert::parse_der(&leaf_der, "leaf").unwrap();
        leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert_eq!(leaf.issuer().as_raw(), ca_cert.subject().as_raw());
        assert_eq!(authority_key_id(&leaf), subject_key_id(&ca_cert));
        assert!(!leaf.is_ca());
        let eku = leaf.extended_key_usage().unwrap().expect("EKU").value;
        assert!(eku.server_auth && !eku.client_auth);
        let info = CertInfo::parse(&issued.cert_pem).unwrap();
        assert_eq!(info.sans, sans);
        assert_eq!(info.common_name, "c1.example");
        assert_eq!(info.issuer_common_name, "oakestra cluster c1 CA");
        assert!(info.not_before <= Utc::now() - chrono::Duration::seconds(59));
        // The key belongs to the certificate.
        let key = KeyPair::from_pem(&issued.key_pem).unwrap();
        assert_eq!(key.subject_public_key_info(), leaf.public_key().raw);
    }

    #[test]
    fn server_names_table() {
        // (name, accepted)
        let cases = [
            ("node-1.local", true),
            ("10.0.0.1", true),
            ("fe80::1", true),
            ("*.example.org", true),
            ("", false),
            ("bad name", false),
            ("-lead.example", false),
            ("a..b", false),
        ];
        for (name, ok) in cases {
            assert_eq!(san(name).is_ok(), ok, "{name:?}");
        }
        let ca = CertificateAuthority::create("x").unwrap();
        assert!(matches!(ca.issue_server(&[], DAY), Err(PkiError::NoNames)));
    }

    #[test]
    fn client_certs_carry_the_identity_and_anonymous_gets_none() {
        let ca = CertificateAuthority::create("x").unwrap();
        for identity in [
            Identity::admin(),
            Identity::Cluster { name: "c1".into() },
            Identity::Node { name: "n1".into() },
            Identity::Root,
        ] {
            let issued = ca.issue_client(&identity, DAY).unwrap();
            let leaf_der = der(&issued.cert_pem);
            assert_eq!(identity_of(&leaf_der), Some(identity.clone()));
            let leaf = cert::parse_der(&leaf_der, "leaf").unwrap();
            let eku = leaf.extended_key_usage().unwrap().expect("EKU").value;
            assert!(eku.client_auth && !eku.server_auth, "{identity}");
        }
        for identity in [Identity::Anonymous, Identity::System] {
            let err = ca.issue_client(&identity, DAY).unwrap_err();
            assert!(matches!(err, PkiError::NoSubject { .. }), "{err}");
        }
    }

    #[test]
    fn sign_csr_takes_only_the_key_and_ignores_the_requested_subject() {
        let ca = CertificateAuthority::create("oakestra cluster c1 CA").unwrap();
        // A request asking to be an administrator.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "oakestra:admin");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "oakestra:masters");
        let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let node = Identity::Node { name: "n1".into() };
        let cert_pem = ca
            .sign_csr(&csr_pem, Usage::Client(node.clone()), DAY)
            .unwrap();
        let leaf_der = der(&cert_pem);
        assert_eq!(identity_of(&leaf_der), Some(node));
        let info = CertInfo::parse(&cert_pem).unwrap();
        assert_eq!(info.common_name, "oakestra:node:n1");
        assert_eq!(info.organizations, vec!["oakestra:nodes".to_string()]);
        assert!(info.sans.is_empty(), "requested names are ignored");
        let leaf = cert::parse_der(&leaf_der, "leaf").unwrap();
        assert_eq!(leaf.public_key().raw, key.subject_public_key_info());

        // A joiner's request signed as a server certificate.
        let (_key, csr_pem) = Csr::generate().unwrap();
        let sans = vec!["10.1.2.3".to_string(), "n1.local".to_string()];
        let cert_pem = ca
            .sign_csr(&csr_pem, Usage::Server { sans: sans.clone() }, DAY)
            .unwrap();
        assert_eq!(CertInfo::parse(&cert_pem).unwrap().sans, sans);
    }

    #[test]
    fn a_csr_with_a_broken_signature_or_no_csr_is_refused() {
        let ca = CertificateAuthority::create("x").unwrap();
        let (_key, csr_pem) = Csr::generate().unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).unwrap();
        let mut bytes = pem.contents;
        // The signature is the last element: change its last byte.
        *bytes.last_mut().unwrap() ^= 0x01;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let broken = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n"
        );
        let usage = Usage::Client(Identity::admin());
        let err = ca.sign_csr(&broken, usage.clone(), DAY).unwrap_err();
        assert!(matches!(err, PkiError::CsrSignature), "{err}");
        let err = ca.sign_csr(ca.cert_pem(), usage, DAY).unwrap_err();
        assert!(matches!(err, PkiError::InvalidCsr { .. }), "{err}");
    }
}
