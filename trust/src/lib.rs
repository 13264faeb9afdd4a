//! The security of a tier: the credentials it keeps on disk, how a tier below joins it,
//! and how its API server tells who is calling.
//!
//! A tier that admits others (the root admits clusters, a cluster admits nodes) holds an
//! [`Authority`]: its own certificate authority, its serving certificate, the identity
//! it presents to the tier below (its proxy certificate), its join and admin tokens and
//! the secrets of the members that joined. A tier that joins one above keeps an
//! [`Upstream`]: the CA it pinned and the certificates it was given.
//!
//! Modules:
//! - [`dir`]: the files under a tier's data directory, and their bootstrap.
//! - [`join`]: the join and renewal protocol: the routes a tier serves (`/cacerts`,
//!   join, renew) and the client that joins with a token, pinning the CA by its hash.
//! - [`shared`]: the credentials several servers of a tier on one etcd share (CA,
//!   tokens, members), sealed in the store and merged with each server's files.
//! - [`authn`]: the API server's authenticator over [`pki::Authenticator`], and the
//!   [`apiserver::auth::Security`] of a tier.

pub mod authn;
pub mod dir;
pub mod join;
pub mod shared;

pub use dir::{Authority, TierPaths, Upstream};

use std::path::PathBuf;

/// Why a tier's credentials could not be set up, loaded or obtained.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A certificate, key or token operation failed.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The token store failed.
    #[error(transparent)]
    Token(#[from] pki::TokenError),
    /// A private file could not be written.
    #[error(transparent)]
    PrivateFile(#[from] pki::FileError),
    /// A file of the tier's data directory could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A TLS setting could not be built from the stored certificates.
    #[error("TLS settings: {0}")]
    Tls(String),
    /// Joining or renewing failed.
    #[error(transparent)]
    Join(#[from] join::JoinError),
}
