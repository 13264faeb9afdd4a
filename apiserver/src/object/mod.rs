//! Objects as the server handles them: JSON values with Kubernetes metadata.
//!
//! One file per concern:
//! - [`key`](mod@key): where an object lives in storage (the key layout).
//! - [`codec`]: the stored bytes; objects are stored without `metadata.resourceVersion`,
//!   which is the storage revision and is filled in on every read.
//! - [`meta`]: reading and writing `metadata` fields.
//! - [`selector`]: label and field selectors of lists and watches.
//! - [`protobuf`]: request bodies of the core kinds in Kubernetes' protobuf encoding.
//!
//! JSON merge patch (RFC 7386) is the `json-patch` crate's `merge`.

pub mod codec;
pub mod key;
pub mod meta;
pub mod protobuf;
pub mod selector;

pub use codec::{decode, encode};
pub use key::key;
pub use meta::{meta_mut, meta_str, resource_version};
pub use selector::{FieldSelector, LabelSelector};
