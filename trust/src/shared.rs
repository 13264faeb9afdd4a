//! The credentials a tier's servers share through their store, so that several
//! `oakestra root` processes on one etcd are one root to everyone else: one CA (a
//! certificate any of them issued is good at all of them), one set of join and admin
//! tokens, one record of which secret owns which member name.
//!
//! Each server keeps its files under its data directory as before (its token store and
//! member records read them there). [`SharedTrust`] keeps them in step with one value
//! in the store, [`STORE_PREFIX`]`/<tier>`, sealed with a passphrase ([`pki::Sealer`]):
//! the operator's (`--store-key-file`) or the first join token, which a second root is
//! given to join the first. Serving certificates stay each server's own (each is dialled
//! by its own names).
//!
//! A sync is a three-way merge of what this server last agreed with the store (the
//! base), its files now, and the store's value now, file by file as each file's
//! [`Merge`] says: a file changed on one side only takes that side; a file both sides
//! changed merges record by record (tokens, members) or takes the store's (the rest),
//! except the CA, which must be the same everywhere: a data directory holding another
//! CA than the store's is an error that names both, and nothing is written. The merge is
//! a pure function ([`merge`]) with tables; writes to the store are compare-and-swap
//! on its revision, retried on a conflict.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::storage::{Storage, StorageError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::TrustError;

/// The etcd key prefix of shared credentials: apart from the API's objects (`/oakestra`),
/// so no watch of the API ever carries them.
pub const STORE_PREFIX: &str = "/oakestra-bootstrap";

/// How often a server syncs its files with the store (a token created at one root
/// works at the others after at most this long).
pub const SYNC_EVERY: Duration = Duration::from_secs(2);

/// What happens to a shared file that both this server and the store changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// It must be the same everywhere (the CA): a difference is an error.
    Pinned,
    /// A JSON object of record collections (`tokens` by `id`, `members` by name):
    /// records merge one by one, the store's winning where both changed one.
    Records,
    /// The store's copy wins.
    StoreWins,
}

/// A shared file (a path relative to the data directory) or, ending in `/`, every file
/// of a directory, with its merge rule.
pub type SharedFile = (&'static str, Merge);

/// The files of a tier's [`crate::Authority`] its servers share (see [`crate::TierPaths`]).
pub const AUTHORITY_FILES: &[SharedFile] = &[
    ("pki/ca.crt", Merge::Pinned),
    ("pki/ca.key", Merge::Pinned),
    ("pki/tokens.json", Merge::Records),
    ("pki/members.json", Merge::Records),
    ("pki/members/", Merge::StoreWins),
    ("join-token", Merge::StoreWins),
];

/// Shared files by path, with their content.
pub type Bundle = BTreeMap<String, String>;

/// A shared file differs in a way no merge may settle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} here differs from the one the store's other servers share")]
pub struct Conflict {
    /// The file, relative to the data directory.
    pub path: String,
}

/// Which side changed a value since the base.
#[derive(Debug, PartialEq, Eq)]
enum Changed {
    /// Both sides agree.
    Neither,
    /// This server did.
    Local,
    /// The store did.
    Store,
    /// Both did, differently.
    Both,
}

fn changed<V: PartialEq>(base: Option<&V>, local: Option<&V>, store: Option<&V>) -> Changed {
    if local == store {
        Changed::Neither
    } else if local == base {
        Changed::Store
    } else if store == base {
        Changed::Local
    } else {
        Changed::Both
    }
}

/// The merge rule of `path` under `files`, `None` when it is not shared.
fn rule_of(files: &[SharedFile], path: &str) -> Option<Merge> {
    files.iter().find_map(|(pattern, merge)| {
        let hit = match pattern.strip_suffix('/') {
            Some(dir) => path
                .strip_prefix(dir)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|name| !name.is_empty() && !name.contains('/')),
            None => path == *pattern,
        };
        hit.then_some(*merge)
    })
}

/// The three-way merge of `local` (this server's files) and `store` (the store's value)
/// since `base` (what they last agreed on).
pub fn merge(
    files: &[SharedFile],
    base: &Bundle,
    local: &Bundle,
    store: &Bundle,
) -> Result<Bundle, Conflict> {
    let paths: std::collections::BTreeSet<&String> = base
        .keys()
        .chain(local.keys())
        .chain(store.keys())
        .collect();
    let mut merged = Bundle::new();
    for path in paths {
        let Some(rule) = rule_of(files, path) else {
            continue;
        };
        let (b, l, s) = (base.get(path), local.get(path), store.get(path));
        let value = match changed(b, l, s) {
            Changed::Neither | Changed::Local => l.cloned(),
            Changed::Store => s.cloned(),
            Changed::Both => match (rule, l, s) {
                (Merge::Records, Some(l), Some(s)) => Some(merge_records(b, l, s)),
                (Merge::Pinned, _, _) => return Err(Conflict { path: path.clone() }),
                _ => s.cloned(),
            },
        };
        if let Some(value) = value {
            merged.insert(path.clone(), value);
        }
    }
    Ok(merged)
}

/// A record collection: an array of objects keyed by their `id`, or an object keyed by
/// its fields.
fn records(value: &Value) -> Option<BTreeMap<String, Value>> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| Some((item.get("id")?.as_str()?.to_string(), item.clone())))
            .collect(),
        Value::Object(fields) => Some(fields.clone().into_iter().collect()),
        _ => None,
    }
}

/// Record by record, the three-way merge of the JSON files `local` and `store` since
/// `base`; the store's file where one is not a collection of records.
fn merge_records(base: Option<&String>, local: &str, store: &str) -> String {
    let parse = |text: &str| serde_json::from_str::<Value>(text).ok();
    let (Some(Value::Object(local)), Some(Value::Object(mut merged))) =
        (parse(local), parse(store))
    else {
        return store.to_string();
    };
    let base = base.and_then(|b| parse(b));
    for (field, local_value) in local {
        let store_value = merged.get(&field).cloned().unwrap_or(Value::Null);
        let base_value = base
            .as_ref()
            .and_then(|b| b.get(&field).cloned())
            .unwrap_or(Value::Null);
        let (Some(l), Some(s)) = (records(&local_value), records(&store_value)) else {
            continue;
        };
        let b = records(&base_value).unwrap_or_default();
        let keys: std::collections::BTreeSet<&String> =
            b.keys().chain(l.keys()).chain(s.keys()).collect();
        let mut kept = BTreeMap::new();
        for key in keys {
            let (bk, lk, sk) = (b.get(key), l.get(key), s.get(key));
            let value = match changed(bk, lk, sk) {
                Changed::Neither | Changed::Local => lk,
                Changed::Store | Changed::Both => sk,
            };
            if let Some(v) = value {
                kept.insert(key.clone(), v.clone());
            }
        }
        let value = match &local_value {
            // Arrays keep the store's order, then what this server added, in its order.
            Value::Array(local_items) => {
                let store_items = store_value.as_array().cloned().unwrap_or_default();
                let id = |v: &Value| v.get("id").and_then(Value::as_str).map(String::from);
                let mut out = Vec::new();
                for item in store_items.iter().chain(local_items) {
                    if let Some(v) = id(item).and_then(|k| kept.remove(&k)) {
                        out.push(v);
                    }
                }
                Value::Array(out)
            }
            _ => Value::Object(kept.into_iter().collect()),
        };
        merged.insert(field, value);
    }
    serde_json::to_string_pretty(&Value::Object(merged)).unwrap_or_else(|_| store.to_string())
}

/// The shared files under `data` as they are now.
pub fn read_local(data: &Path, files: &[SharedFile]) -> Result<Bundle, TrustError> {
    let mut bundle = Bundle::new();
    let mut read = |rel: String| -> Result<(), TrustError> {
        let path = data.join(&rel);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                bundle.insert(rel, text);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(TrustError::File { path, source }),
        }
    };
    for (pattern, _) in files {
        match pattern.strip_suffix('/') {
            None => read(pattern.to_string())?,
            Some(dir) => {
                let entries = match std::fs::read_dir(data.join(dir)) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(TrustError::File {
                            path: data.join(dir),
                            source,
                        })
                    }
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    // Atomic writes leave `.tmp` files only for a moment; never share them.
                    .filter(|n| !n.starts_with('.'))
                    .collect();
                names.sort();
                for name in names {
                    read(format!("{dir}/{name}"))?;
                }
            }
        }
    }
    Ok(bundle)
}

/// Make the shared files under `data` what `to` says, where they differ from `from`
/// (what is there now): written privately (0600) and atomically, or removed.
fn write_local(data: &Path, from: &Bundle, to: &Bundle) -> Result<usize, TrustError> {
    let mut written = 0;
    for (rel, text) in to {
        if from.get(rel) != Some(text) {
            pki::write_private(&data.join(rel), text.as_bytes())?;
            written += 1;
        }
    }
    for rel in from.keys().filter(|rel| !to.contains_key(*rel)) {
        let path = data.join(rel);
        match std::fs::remove_file(&path) {
            Ok(()) => written += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TrustError::File { path, source }),
        }
    }
    Ok(written)
}

/// Why the shared credentials could not be synced.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The store failed.
    #[error("the store: {0}")]
    Store(#[from] StorageError),
    /// The stored value does not open with this server's passphrase.
    #[error(
        "the credentials the store's other servers share ({key}) do not open: {source}; start this server with the first server's join token (`--token`, the content of its DATA/join-token) or the same `--store-key-file` as they"
    )]
    Sealed {
        /// The store key.
        key: String,
        /// Why.
        source: pki::SealError,
    },
    /// The stored value is not a bundle of files.
    #[error("the shared credentials at {key} are not readable: {reason}")]
    Corrupt {
        /// The store key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A file of the data directory holds another CA than the store's.
    #[error(
        "{} holds another certificate authority than the one the store's other servers share ({key}): this data directory belongs to another tier; move {} away to take the shared one, or use a store of its own",
        data.join(&conflict.path).display(),
        data.join("pki").display()
    )]
    Pinned {
        /// The data directory.
        data: PathBuf,
        /// The store key.
        key: String,
        /// The file.
        conflict: Conflict,
    },
    /// The data directory could not be read or written.
    #[error(transparent)]
    Files(#[from] TrustError),
}

/// What one sync changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Synced {
    /// Files of the data directory written or removed.
    pub local: usize,
    /// Whether the store's value was written.
    pub stored: bool,
}

/// Keeps a server's shared files in step with the store (see the module's docs).
pub struct SharedTrust {
    store: Arc<dyn Storage>,
    key: String,
    data: PathBuf,
    files: Vec<SharedFile>,
    sealer: pki::Sealer,
    /// What this server and the store last agreed on.
    base: Mutex<Bundle>,
}

impl SharedTrust {
    /// The shared files of tier `tier` (`root`) in `store`, kept in step with `files`
    /// under `data`, sealed with `sealer`.
    pub fn new(
        store: Arc<dyn Storage>,
        tier: &str,
        data: PathBuf,
        files: Vec<SharedFile>,
        sealer: pki::Sealer,
    ) -> SharedTrust {
        SharedTrust {
            store,
            key: Self::key_of(tier),
            data,
            files,
            sealer,
            base: Mutex::new(Bundle::new()),
        }
    }

    /// The store key of tier `tier`'s shared files, in the stores [`connect`] opens.
    pub fn key_of(tier: &str) -> String {
        format!("/{tier}")
    }

    /// Whether `store` holds shared files of tier `tier` (a server that finds them must
    /// be able to open them).
    pub async fn stored(store: &dyn Storage, tier: &str) -> Result<bool, SharedError> {
        Ok(store.get(&Self::key_of(tier)).await?.is_some())
    }

    /// The store's bundle and its revision (`0`: none yet).
    async fn load(&self) -> Result<(i64, Bundle), SharedError> {
        let Some(kv) = self.store.get(&self.key).await? else {
            return Ok((0, Bundle::new()));
        };
        let corrupt = |reason: String| SharedError::Corrupt {
            key: self.key.clone(),
            reason,
        };
        let sealed: pki::Sealed =
            serde_json::from_slice(&kv.value).map_err(|e| corrupt(e.to_string()))?;
        let plain = self
            .sealer
            .open(self.key.as_bytes(), &sealed)
            .map_err(|source| SharedError::Sealed {
                key: self.key.clone(),
                source,
            })?;
        let bundle = serde_json::from_slice(&plain).map_err(|e| corrupt(e.to_string()))?;
        Ok((kv.mod_revision, bundle))
    }

    /// One sync: merge, write what changed here, store what changed there.
    pub async fn sync(&self) -> Result<Synced, SharedError> {
        loop {
            let (revision, stored) = self.load().await?;
            let local = read_local(&self.data, &self.files)?;
            let base = self.base.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let merged = merge(&self.files, &base, &local, &stored).map_err(|conflict| {
                SharedError::Pinned {
                    data: self.data.clone(),
                    key: self.key.clone(),
                    conflict,
                }
            })?;
            let mut synced = Synced::default();
            if merged != stored {
                let plain = serde_json::to_vec(&merged).expect("a map of strings");
                let sealed = self
                    .sealer
                    .seal(self.key.as_bytes(), &plain)
                    .map_err(|source| SharedError::Sealed {
                        key: self.key.clone(),
                        source,
                    })?;
                let value = serde_json::to_vec(&sealed).expect("an envelope");
                let written = if revision == 0 {
                    self.store.create(&self.key, value).await
                } else {
                    self.store.update(&self.key, value, revision).await
                };
                match written {
                    Ok(_) => synced.stored = true,
                    // Another server wrote in between: merge with what it wrote.
                    Err(StorageError::Conflict { .. } | StorageError::AlreadyExists { .. }) => {
                        continue
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            synced.local = write_local(&self.data, &local, &merged)?;
            *self.base.lock().unwrap_or_else(|e| e.into_inner()) = merged;
            if synced != Synced::default() {
                tracing::info!(key = %self.key, files_written = synced.local, stored = synced.stored, "synced the shared credentials");
            }
            return Ok(synced);
        }
    }

    /// Sync every [`SYNC_EVERY`] until `shutdown`; a failure is logged and the next
    /// sync tries again.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SYNC_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.sync().await {
                tracing::warn!(key = %self.key, error = %e, "syncing the shared credentials failed");
            }
        }
    }
}

/// The store shared credentials are kept in: etcd at `endpoints`, under [`STORE_PREFIX`].
pub async fn connect(endpoints: &[String]) -> Result<Arc<dyn Storage>, SharedError> {
    Ok(Arc::new(
        apiserver::storage::etcd::EtcdStore::connect(endpoints, STORE_PREFIX).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(files: &[(&str, &str)]) -> Bundle {
        files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn files_take_the_side_that_changed_them() {
        let ca = ("pki/ca.crt", "CA");
        let key = ("pki/ca.key", "KEY");
        type Case = (
            &'static str,
            Bundle,
            Bundle,
            Bundle,
            Result<Bundle, Conflict>,
        );
        let cases: Vec<Case> = vec![
            (
                "a fresh server takes everything from the store",
                bundle(&[]),
                bundle(&[]),
                bundle(&[ca, key, ("join-token", "K10a")]),
                Ok(bundle(&[ca, key, ("join-token", "K10a")])),
            ),
            (
                "the first server gives everything to the store",
                bundle(&[]),
                bundle(&[ca, key]),
                bundle(&[]),
                Ok(bundle(&[ca, key])),
            ),
            (
                "a member CA added here is kept",
                bundle(&[ca]),
                bundle(&[ca, ("pki/members/c1.ca.crt", "C1")]),
                bundle(&[ca]),
                Ok(bundle(&[ca, ("pki/members/c1.ca.crt", "C1")])),
            ),
            (
                "a member CA removed in the store goes here too",
                bundle(&[ca, ("pki/members/c1.ca.crt", "C1")]),
                bundle(&[ca, ("pki/members/c1.ca.crt", "C1")]),
                bundle(&[ca]),
                Ok(bundle(&[ca])),
            ),
            (
                "where both changed a plain file, the store's wins",
                bundle(&[("join-token", "K10a")]),
                bundle(&[("join-token", "K10b")]),
                bundle(&[("join-token", "K10c")]),
                Ok(bundle(&[("join-token", "K10c")])),
            ),
            (
                "another CA here than the store's is a conflict",
                bundle(&[]),
                bundle(&[("pki/ca.crt", "MINE")]),
                bundle(&[ca]),
                Err(Conflict {
                    path: "pki/ca.crt".into(),
                }),
            ),
            (
                "files that are not shared are left out",
                bundle(&[]),
                bundle(&[("pki/server.key", "S"), ("pki/members/x/y", "Z")]),
                bundle(&[]),
                Ok(bundle(&[])),
            ),
        ];
        for (what, base, local, store, want) in cases {
            assert_eq!(
                merge(AUTHORITY_FILES, &base, &local, &store),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn tokens_and_members_merge_record_by_record() {
        let tokens = |ids: &[&str]| {
            let items: Vec<Value> = ids
                .iter()
                .map(|id| serde_json::json!({"id": id, "secret_sha256": format!("h{id}")}))
                .collect();
            serde_json::json!({ "tokens": items }).to_string()
        };
        let ids = |text: &str| -> Vec<String> {
            let v: Value = serde_json::from_str(text).unwrap();
            v["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect()
        };
        let path = "pki/tokens.json";
        let run = |base: &[&str], local: &[&str], store: &[&str]| {
            let b = bundle(&[(path, &tokens(base))]);
            let l = bundle(&[(path, &tokens(local))]);
            let s = bundle(&[(path, &tokens(store))]);
            ids(&merge(AUTHORITY_FILES, &b, &l, &s).unwrap()[path])
        };
        // Created here and there at once: both kept, the store's first.
        assert_eq!(run(&["a"], &["a", "b"], &["a", "c"]), ["a", "c", "b"]);
        // Deleted here while another was created there.
        assert_eq!(run(&["a", "b"], &["b"], &["a", "b", "c"]), ["b", "c"]);
        // Deleted there, untouched here.
        assert_eq!(run(&["a", "b"], &["a", "b", "d"], &["b"]), ["b", "d"]);

        let members = |pairs: &[(&str, &str)]| {
            let map: serde_json::Map<String, Value> = pairs
                .iter()
                .map(|(n, h)| (n.to_string(), Value::from(*h)))
                .collect();
            serde_json::json!({ "members": map }).to_string()
        };
        let path = "pki/members.json";
        let b = bundle(&[(path, &members(&[("c1", "h1")]))]);
        let l = bundle(&[(path, &members(&[("c1", "h1"), ("c2", "h2")]))]);
        let s = bundle(&[(path, &members(&[("c3", "h3")]))]);
        let merged: Value =
            serde_json::from_str(&merge(AUTHORITY_FILES, &b, &l, &s).unwrap()[path]).unwrap();
        assert_eq!(
            merged,
            serde_json::json!({"members": {"c2": "h2", "c3": "h3"}}),
            "c1 forgotten there, c2 joined here, c3 joined there"
        );
    }

    #[test]
    fn local_files_are_read_and_written_as_the_bundle_says() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        pki::write_private(&data.join("pki/ca.crt"), b"CA").unwrap();
        pki::write_private(&data.join("pki/members/c1.ca.crt"), b"C1").unwrap();
        pki::write_private(&data.join("pki/server.key"), b"not shared").unwrap();
        let local = read_local(data, AUTHORITY_FILES).unwrap();
        assert_eq!(
            local,
            bundle(&[("pki/ca.crt", "CA"), ("pki/members/c1.ca.crt", "C1")])
        );
        let want = bundle(&[("pki/ca.crt", "CA"), ("join-token", "K10x")]);
        assert_eq!(write_local(data, &local, &want).unwrap(), 2);
        assert_eq!(read_local(data, AUTHORITY_FILES).unwrap(), want);
        assert!(data.join("pki/server.key").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("join-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
