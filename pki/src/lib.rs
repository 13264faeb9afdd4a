//! Who is who in an Oakestra hierarchy.
//!
//! - [`identity`]: [`Identity`], who a request comes from, and how a certificate's
//!   subject carries it.

pub mod identity;

pub use identity::Identity;
