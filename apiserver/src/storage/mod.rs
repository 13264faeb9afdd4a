//! The storage contract and its two backends.
//!
//! A store maps string keys to opaque bytes under one global, monotonic revision: every
//! successful write gets the next revision, which becomes the object's
//! `resourceVersion`. Updates and deletes are compare-and-swap on the key's revision.
//! A watch streams every change after a given revision, in revision order, with no gap
//! and no duplicate, or fails with [`StorageError::TooOld`] when that revision is no
//! longer available.

use async_trait::async_trait;
use futures::stream::BoxStream;

pub mod conformance;
pub mod embedded;
pub mod etcd;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The bytes stored under it (shared: the history, the watch channel and the
    /// previous version of an event hold one copy, not one each).
    pub value: bytes::Bytes,
    /// Revision of the write that created the key.
    pub create_revision: i64,
    /// Revision of the last write to the key (for a deletion event: the deletion's).
    pub mod_revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A new key.
    Created(KeyValue),
    /// The new value, and the value it replaced (so watchers can tell an object that
    /// stopped matching a selector).
    Updated {
        /// The key after the write.
        kv: KeyValue,
        /// The key before it, where the backend still has it.
        prev: Option<KeyValue>,
    },
    /// The value is the last one stored; `mod_revision` is the deletion's revision.
    Deleted(KeyValue),
}

impl WatchEvent {
    /// The key as this change left it (for a deletion: its last value).
    pub fn kv(&self) -> &KeyValue {
        match self {
            WatchEvent::Created(kv) | WatchEvent::Updated { kv, .. } | WatchEvent::Deleted(kv) => {
                kv
            }
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        self.kv().mod_revision
    }
}

/// A list request: every key under `prefix` after `start_after`, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Only keys that start with this.
    pub prefix: String,
    /// Continue after this key (exclusive).
    pub start_after: Option<String>,
    /// At most this many keys (`None`: all).
    pub limit: Option<usize>,
    /// List as of this revision instead of the latest one.
    pub revision: Option<i64>,
}

/// One page of a list.
#[derive(Debug, Clone, Default)]
pub struct ListResponse {
    /// The keys, in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list reflects.
    pub revision: i64,
    /// More keys remain after the last item.
    pub more: bool,
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A create found the key present.
    #[error("{key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// An update or delete found no such key.
    #[error("{key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A compare-and-swap found the key at another revision.
    #[error("{key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: i64,
        /// The revision the key is at.
        actual: i64,
    },
    /// The revision asked for (a list's or a watch's) is no longer available.
    #[error("revision {requested} is too old: the oldest available is {oldest}")]
    TooOld {
        /// The revision asked for.
        requested: i64,
        /// The oldest revision available (0 where the backend does not say).
        oldest: i64,
    },
    /// The backend failed (I/O, connection, a closed writer). `message` already
    /// says what went wrong in full; `source` is the underlying error, where there is
    /// one, for callers that inspect causes.
    #[error("{backend} storage: {message}")]
    Backend {
        /// Which backend (`embedded`, `etcd`).
        backend: &'static str,
        /// What failed, including the cause's text.
        message: String,
        /// The error of the library underneath (redb, etcd-client), if any.
        #[source]
        source: Option<BoxError>,
    },
}

/// A boxed error from a backend's library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl StorageError {
    /// A backend failure with no underlying error (a closed stream, a stopped writer).
    pub fn backend(backend: &'static str, message: impl Into<String>) -> Self {
        StorageError::Backend {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// A backend failure caused by `source`; `message` says what was being done and
    /// should include the source's text (it is what users see).
    pub fn backend_caused(
        backend: &'static str,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StorageError::Backend {
            backend,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// The result of a storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The changes a [`Storage::watch`] streams; an error ends the stream.
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// What the API server needs from storage. Implemented by [`embedded::EmbeddedStore`]
/// and [`etcd::EtcdStore`]; both pass [`conformance::run_all`].
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Backend name for logs and metrics (`embedded`, `etcd`).
    fn backend(&self) -> &'static str;
    /// The key, if present, at the latest revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// One page of the keys the request selects.
    async fn list(&self, request: ListRequest) -> Result<ListResponse>;
    /// Store a new key; [`StorageError::AlreadyExists`] if it exists.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue>;
    /// Replace a key whose revision is `expected_revision`.
    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: i64) -> Result<KeyValue>;
    /// Delete a key (if `expected_revision` is given, only at that revision). Returns
    /// the deleted value with `mod_revision` set to the deletion's revision.
    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<KeyValue>;
    /// Every change under `prefix` with a revision greater than `after_revision`.
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream>;
    /// The latest revision.
    async fn revision(&self) -> Result<i64>;
}

/// The first key after every key that starts with `prefix` (etcd's range end).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn a_backend_error_keeps_its_message_and_source() {
        let cause = std::io::Error::other("disk on fire");
        let e = StorageError::backend_caused("embedded", format!("opening x: {cause}"), cause);
        assert_eq!(e.to_string(), "embedded storage: opening x: disk on fire");
        assert_eq!(e.source().unwrap().to_string(), "disk on fire");
        let e = StorageError::backend("etcd", "watch stream closed");
        assert_eq!(e.to_string(), "etcd storage: watch stream closed");
        assert!(e.source().is_none());
    }
}
