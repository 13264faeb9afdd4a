//! Certificates and keys as files and as facts: [`CertifiedKey`] (a leaf certificate
//! and its key, saved as `<stem>.crt` and `<stem>.key`), [`CertInfo`] (what a
//! certificate says: names, issuer, validity), [`identity_of`] (the [`Identity`] a
//! certificate's subject carries), [`renew_at`], [`ca_hash`] (the pin of a CA) and
//! [`Csr`] (the key and signing request a joiner sends).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use chrono::{DateTime, Utc};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::error::PkiError;
use crate::files::{self, PUBLIC};
use crate::secret::sha256_hex;
use crate::Identity;

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl fmt::Debug for CertifiedKey {
    /// Shows the certificate, never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

impl CertifiedKey {
    /// Writes `dir/<stem>.crt` (0644) and `dir/<stem>.key` (0600), each atomically;
    /// `dir` is created (0700) when missing.
    pub fn save(&self, dir: &Path, stem: &str) -> Result<(), PkiError> {
        files::create_private_dir(dir)?;
        // The key first: a certificate on disk always has its key beside it.
        files::write_private(&dir.join(format!("{stem}.key")), self.key_pem.as_bytes())?;
        files::write_atomic(
            &dir.join(format!("{stem}.crt")),
            self.cert_pem.as_bytes(),
            PUBLIC,
        )?;
        Ok(())
    }

    /// Reads `dir/<stem>.crt` and `dir/<stem>.key`, checking that the certificate parses
    /// and that the key belongs to it.
    pub fn load(dir: &Path, stem: &str) -> Result<CertifiedKey, PkiError> {
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        let cert_pem = files::read_string(&cert_path)?;
        let key_pem = files::read_string(&key_path)?;
        load_pair(&cert_path, &cert_pem, &key_path, &key_pem)?;
        Ok(CertifiedKey { cert_pem, key_pem })
    }
}

/// Parses a certificate and its key read from `cert_path` and `key_path`, refusing a
/// key that does not belong to the certificate. Returns the key and the certificate's
/// DER.
pub(crate) fn load_pair(
    cert_path: &Path,
    cert_pem: &str,
    key_path: &Path,
    key_pem: &str,
) -> Result<(KeyPair, Vec<u8>), PkiError> {
    let der = pem_to_der(cert_pem, &cert_path.display().to_string())?;
    let cert = parse_der(&der, &cert_path.display().to_string())?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::InvalidKey {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if rcgen::PublicKeyData::subject_public_key_info(&key) != cert.public_key().raw {
        return Err(PkiError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        });
    }
    Ok((key, der))
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name (empty when it has none).
    pub common_name: String,
    /// The subject's organizations (the groups, as Kubernetes reads them).
    pub organizations: Vec<String>,
    /// The issuer's common name (empty when it has none).
    pub issuer_common_name: String,
    /// The start of the validity window.
    pub not_before: DateTime<Utc>,
    /// The end of the validity window.
    pub not_after: DateTime<Utc>,
    /// The subject alternative names: DNS names and IP addresses, as text.
    pub sans: Vec<String>,
}

impl CertInfo {
    /// Reads the first certificate of a PEM text.
    pub fn parse(cert_pem: &str) -> Result<CertInfo, PkiError> {
        let der = pem_to_der(cert_pem, "the certificate")?;
        CertInfo::parse_der(&der)
    }

    /// Reads a DER certificate.
    pub fn parse_der(cert_der: &[u8]) -> Result<CertInfo, PkiError> {
        let cert = parse_der(cert_der, "the certificate")?;
        let (common_name, organizations) = subject_fields(cert.subject());
        let (issuer_common_name, _) = subject_fields(cert.issuer());
        let time = |t: x509_parser::time::ASN1Time| {
            DateTime::from_timestamp(t.timestamp(), 0).ok_or_else(|| PkiError::InvalidCertificate {
                origin: "the certificate".into(),
                reason: format!("its validity holds an unrepresentable time {t}"),
            })
        };
        let sans = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .filter_map(general_name_text)
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                return Err(PkiError::InvalidCertificate {
                    origin: "the certificate".into(),
                    reason: format!("its subject alternative names: {e}"),
                })
            }
        };
        Ok(CertInfo {
            common_name,
            organizations,
            issuer_common_name,
            not_before: time(cert.validity().not_before)?,
            not_after: time(cert.validity().not_after)?,
            sans,
        })
    }
}

fn general_name_text(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::DNSName(dns) => Some((*dns).to_string()),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
            16 => Some(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// The common name (empty when none) and the organizations of a distinguished name.
pub(crate) fn subject_fields(name: &X509Name<'_>) -> (String, Vec<String>) {
    let text =
        |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().ok().map(str::to_string);
    let common_name = name
        .iter_common_name()
        .next()
        .and_then(text)
        .unwrap_or_default();
    let organizations = name.iter_organization().filter_map(text).collect();
    (common_name, organizations)
}

/// The identity a certificate's subject carries (see [`Identity::from_subject`]);
/// `None` when the DER is not a certificate or its subject is not one we issue.
pub fn identity_of(cert_der: &[u8]) -> Option<Identity> {
    let cert = parse_der(cert_der, "the certificate").ok()?;
    subject_identity(&cert)
}

pub(crate) fn subject_identity(cert: &X509Certificate<'_>) -> Option<Identity> {
    let (cn, orgs) = subject_fields(cert.subject());
    let orgs: Vec<&str> = orgs.iter().map(String::as_str).collect();
    Identity::from_subject(&cn, &orgs)
}

/// When to renew a certificate: two thirds into its validity window.
pub fn renew_at(info: &CertInfo) -> DateTime<Utc> {
    info.not_before + (info.not_after - info.not_before) * 2 / 3
}

/// The pin of a CA: `sha256:<lowercase hex of sha256(SubjectPublicKeyInfo DER)>`. A
/// joiner computes it from the PEM it fetched and compares it with its join token's.
pub fn ca_hash(ca_pem: &str) -> Result<String, PkiError> {
    let der = pem_to_der(ca_pem, "the CA certificate")?;
    let cert = parse_der(&der, "the CA certificate")?;
    Ok(spki_hash(cert.public_key().raw))
}

/// The pin of a public key: `sha256:<hex>` of its `SubjectPublicKeyInfo` DER.
pub(crate) fn spki_hash(spki_der: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(spki_der))
}

/// The DER of the first certificate in a PEM text; `origin` names the text in errors.
pub(crate) fn pem_to_der(pem: &str, origin: &str) -> Result<Vec<u8>, PkiError> {
    let invalid = |reason: String| PkiError::InvalidCertificate {
        origin: origin.to_string(),
        reason,
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    if pem.label != "CERTIFICATE" {
        return Err(invalid(format!(
            "it holds a {:?} block, not a CERTIFICATE",
            pem.label
        )));
    }
    Ok(pem.contents)
}

/// Parses a DER certificate; `origin` names it in errors.
pub(crate) fn parse_der<'a>(der: &'a [u8], origin: &str) -> Result<X509Certificate<'a>, PkiError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::InvalidCertificate {
            origin: origin.to_string(),
            reason: e.to_string(),
        })
}

/// A joiner's certificate signing request.
#[derive(Debug)]
pub struct Csr;

/// The subject a joiner's request names; the signer ignores it and writes the identity
/// it decided on.
pub const CSR_COMMON_NAME: &str = "oakestra-join";

impl Csr {
    /// A fresh ECDSA P-256 key and a request signed with it: `(key PEM, CSR PEM)`. The
    /// key never leaves the joiner; the request is sent to the signer.
    pub fn generate() -> Result<(String, String), PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(PkiError::generate("generate a key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, CSR_COMMON_NAME);
        let csr = params
            .serialize_request(&key)
            .map_err(PkiError::generate("sign the certificate request"))?;
        let csr_pem = csr
            .pem()
            .map_err(PkiError::generate("encode the certificate request"))?;
        Ok((key.serialize_pem(), csr_pem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::mode_of;
    use crate::CertificateAuthority;
    use std::time::Duration;

    #[test]
    fn certified_keys_save_private_keys_and_load_back() {
        let ca = CertificateAuthority::create("x").unwrap();
        let issued = ca
            .issue_client(&Identity::admin(), Duration::from_secs(3600))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("admin");
        issued.save(&sub, "admin").unwrap();
        assert_eq!(mode_of(&sub.join("admin.key")), 0o600);
        assert_eq!(mode_of(&sub.join("admin.crt")), 0o644);
        assert_eq!(CertifiedKey::load(&sub, "admin").unwrap(), issued);
        assert!(!format!("{issued:?}").contains(&issued.key_pem));
        // A key of another certificate is refused.
        let other = ca
            .issue_client(&Identity::Root, Duration::from_secs(3600))
            .unwrap();
        std::fs::write(sub.join("admin.key"), &other.key_pem).unwrap();
        let err = CertifiedKey::load(&sub, "admin").unwrap_err();
        assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn renewal_is_two_thirds_into_the_lifetime() {
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        // (not_before, not_after, renew_at)
        let cases = [(0, 300, 200), (1000, 1900, 1600), (0, 0, 0)];
        for (nb, na, renew) in cases {
            let info = CertInfo {
                common_name: String::new(),
                organizations: vec![],
                issuer_common_name: String::new(),
                not_before: at(nb),
                not_after: at(na),
                sans: vec![],
            };
            assert_eq!(renew_at(&info), at(renew), "{nb}..{na}");
        }
    }

    #[test]
    fn the_ca_hash_of_a_fetched_pem_is_the_ca_s_hash_and_joiner_csrs_parse() {
        let ca = CertificateAuthority::create("x").unwrap();
        assert_eq!(ca_hash(ca.cert_pem()).unwrap(), ca.hash());
        let other = CertificateAuthority::create("x").unwrap();
        assert_ne!(ca_hash(other.cert_pem()).unwrap(), ca.hash());
        assert!(ca_hash("not a pem").is_err());
        let (key_pem, csr_pem) = Csr::generate().unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&csr_pem).unwrap();
        assert_eq!(
            csr.params.distinguished_name.get(&DnType::CommonName),
            Some(&rcgen::DnValue::Utf8String(CSR_COMMON_NAME.into()))
        );
    }
}
