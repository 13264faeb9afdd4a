//! [`PkiError`]: what can go wrong creating, loading, issuing and parsing certificates.

use std::path::PathBuf;

use crate::files::FileError;
use crate::secret::RandomError;

/// Creating, loading, issuing or parsing a certificate or key failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The system's random source failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// rcgen refused to generate a key or sign a certificate.
    #[error("cannot {what}: {source}")]
    Generate {
        /// What was being done, e.g. `sign the certificate`.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// Text that should hold a PEM certificate does not.
    #[error("{origin} is not a PEM certificate: {reason}")]
    InvalidCertificate {
        /// Where the text came from: a file's path, or what it is.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Text that should hold a PEM private key does not.
    #[error("{} is not a PEM private key (PKCS#8, ECDSA P-256): {reason}", path.display())]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A key file does not belong to the certificate beside it.
    #[error("the key {} does not belong to the certificate {}: restore the pair, or remove both to start over", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate loaded as a CA is not one (basicConstraints CA:true is missing).
    #[error("{} is not a CA certificate (basicConstraints CA:true is missing)", path.display())]
    NotCa {
        /// The certificate file.
        path: PathBuf,
    },
    /// Only one of a CA's two files exists: the certificate or the key is missing.
    #[error("{} exists but {} does not: restore it, or remove both to create a new CA (which every peer must then trust anew)", present.display(), missing.display())]
    HalfCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A certificate signing request is malformed.
    #[error("the certificate signing request is malformed: {reason}")]
    InvalidCsr {
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate signing request is not signed by the key it carries.
    #[error("the certificate signing request's signature does not verify with the key it carries")]
    CsrSignature,
    /// A certificate was asked for an identity no certificate may carry.
    #[error("no certificate can carry the identity {identity} (it has no certificate subject)")]
    NoSubject {
        /// The identity (its user name).
        identity: String,
    },
    /// An identity's subject has more than one organization, which rcgen cannot write.
    #[error("the identity {identity} has more than one group; a certificate carries one")]
    ManyGroups {
        /// The identity (its user name).
        identity: String,
    },
    /// A server certificate was asked for without any name.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoNames,
    /// A server certificate name is neither an IP address nor a valid DNS name.
    #[error("{name:?} is neither an IP address nor a DNS name: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A validity window cannot be written into a certificate.
    #[error("invalid validity window: {reason}")]
    Validity {
        /// What is wrong with it.
        reason: String,
    },
}

impl PkiError {
    pub(crate) fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
        move |source| PkiError::Generate { what, source }
    }
}
