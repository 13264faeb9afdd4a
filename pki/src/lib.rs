//! Who is who in an Oakestra hierarchy.
//!
//! - [`identity`]: [`Identity`], who a request comes from, and how a certificate's
//!   subject carries it.
//! - [`ca`]: [`CertificateAuthority`], a tier's CA and the certificates it issues.
//! - [`cert`]: [`CertifiedKey`] (a certificate and its key as files), [`CertInfo`]
//!   (what a certificate says), [`identity_of`], [`renew_at`], [`ca_hash`] (the pin of a
//!   CA) and [`Csr`] (a joiner's key and signing request).
//! - [`token`]: [`JoinToken`] (`K10<CA hash>::<id>.<secret>`), [`TokenStore`] (the
//!   tokens a server accepts, secrets hashed) and [`MemberSecrets`] (which joiner's
//!   secret owns which member name).
//! - [`authn`]: [`Authenticator`], a peer's certificate or bearer token to an
//!   [`Identity`], with the CAs it trusts and what each may vouch for.
//! - [`live`]: [`LiveCertificate`], a certificate and key presented over TLS (by a server
//!   or a client) and replaceable while in use.
//! - [`files`]: [`write_private`], atomic writes of files only their owner reads.
//! - [`sealed`]: [`Sealer`], values sealed with a passphrase (AES-256-GCM under a
//!   PBKDF2 key) for a store other servers read.
//! - [`error`]: [`PkiError`], what goes wrong with certificates and keys.

pub mod authn;
pub mod ca;
pub mod cert;
pub mod error;
pub mod files;
pub mod identity;
pub mod live;
pub mod sealed;
mod secret;
pub mod token;

pub use authn::{Authenticator, AuthnError, Trust, Vouch};
pub use ca::{CertificateAuthority, Usage};
pub use cert::{ca_hash, identity_of, renew_at, CertInfo, CertifiedKey, Csr};
pub use error::PkiError;
pub use files::{write_private, FileError};
pub use identity::Identity;
pub use live::{certificates_of, LiveCertificate, LiveCertificateError};
pub use sealed::{SealError, Sealed, Sealer};
pub use secret::{random_string, RandomError};
pub use token::{
    parse_bearer, Claim, JoinToken, MemberSecrets, TokenError, TokenInfo, TokenStore, TokenUsage,
};
