//! Backups of a store (`oakestra backup` and `oakestra restore`): every key as of one
//! revision, in one file, and reading such a file back, checked whole before anything
//! is written.
//!
//! [`snapshot`] is the one writer: the server streams it at [`SNAPSHOT_PATH`] to
//! administrators (a running embedded store is held by its server, so another process
//! cannot read it), and `oakestra backup` runs it over a store it opens itself. The file
//! is JSON lines (format version [`VERSION`]):
//!
//! ```text
//! {"format":"oakestra-backup","version":1,"revision":1234,"takenAt":"2025-01-01T00:00:00Z","store":"embedded"}
//! {"key":"/core/namespaces/default","value":{"apiVersion":"v1","kind":"Namespace",…}}
//! …                                                        one line per key, in key order
//! {"end":{"objects":42}}
//! ```
//!
//! A value is the object exactly as stored (its JSON, without `resourceVersion`, status
//! included). The list is paged, every page read at the first page's revision, so the
//! file is the store as of `revision`. The end line makes a truncated file tell itself.
//! [`read`] checks every line (the header, each key's kind and name against its value,
//! key order, the end line's count) and says which line is wrong.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::storage::{KeyValue, ListRequest, Storage, StorageError};

/// The path a server serves its store's snapshot at (`GET`, administrators only).
pub const SNAPSHOT_PATH: &str = "/oakestra/v1/snapshot";
/// The `format` of a backup's first line.
pub const FORMAT: &str = "oakestra-backup";
/// The version of the format this code writes and reads.
pub const VERSION: u32 = 1;
/// How far past the backup's revision a restored store's revisions start. Clients that
/// watched the store before may hold any revision it reached after the backup; a
/// restored store starts above all of them, so their watches are answered 410 and they
/// list again, instead of resuming in another history. The same figure Kubernetes
/// advises for etcd (`etcdutl snapshot restore --bump-revision 1000000000`).
pub const REVISION_BUMP: i64 = 1_000_000_000;
/// Keys per page of the snapshot's list.
const PAGE: usize = 500;

/// The first line of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format's version ([`VERSION`]).
    pub version: u32,
    /// The store's revision every key is read at.
    pub revision: i64,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub taken_at: String,
    /// The backend it was taken from (`embedded`, `etcd`).
    pub store: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    key: String,
    #[serde(borrow)]
    value: &'a RawValue,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    end: EndCount,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndCount {
    objects: usize,
}

/// Every key of `store` as of one revision, as the lines of a backup file (the header
/// once the first page says the revision; the end line last). A storage error ends the
/// stream (the end line is then missing: a file of it is refused by [`read`]).
pub fn snapshot(store: Arc<dyn Storage>) -> BoxStream<'static, Result<Bytes, StorageError>> {
    paged(store, PAGE)
}

/// [`snapshot`], listing `page` keys at a time.
fn paged(store: Arc<dyn Storage>, page: usize) -> BoxStream<'static, Result<Bytes, StorageError>> {
    enum Step {
        First,
        Page {
            revision: i64,
            after: String,
            count: usize,
        },
        End {
            count: usize,
        },
        Done,
    }
    let backend = store.backend();
    futures::stream::try_unfold(Step::First, move |step| {
        let store = store.clone();
        async move {
            let (revision, after, count) = match step {
                Step::Done => return Ok(None),
                Step::End { count } => {
                    let end = End {
                        end: EndCount { objects: count },
                    };
                    return Ok(Some((json_line(&end), Step::Done)));
                }
                Step::First => (None, None, 0),
                Step::Page {
                    revision,
                    after,
                    count,
                } => (Some(revision), Some(after), count),
            };
            let page = store
                .list(ListRequest {
                    prefix: "/".into(),
                    start_after: after,
                    limit: Some(page),
                    revision,
                })
                .await?;
            let mut chunk = Vec::new();
            if revision.is_none() {
                let header = Header {
                    format: FORMAT.into(),
                    version: VERSION,
                    revision: page.revision,
                    taken_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    store: backend.into(),
                };
                chunk.extend_from_slice(&json_line(&header));
            }
            for kv in &page.items {
                chunk.extend_from_slice(&object_line(backend, kv)?);
            }
            let count = count + page.items.len();
            let next = match page.items.last() {
                Some(last) if page.more => Step::Page {
                    revision: page.revision,
                    after: last.key.clone(),
                    count,
                },
                _ => Step::End { count },
            };
            Ok(Some((Bytes::from(chunk), next)))
        }
    })
    .boxed()
}

fn json_line(value: &impl Serialize) -> Bytes {
    let mut line = serde_json::to_vec(value).expect("a backup line serializes");
    line.push(b'\n');
    line.into()
}

/// One key's line: its value as it is stored (re-encoded on one line if it spans
/// several); a value that is not a JSON object is a broken store, and ends the backup.
fn object_line(backend: &'static str, kv: &KeyValue) -> Result<Bytes, StorageError> {
    let not_json = |why: String| {
        StorageError::backend(
            backend,
            format!(
                "backing up {}: the stored value is not a JSON object: {why}",
                kv.key
            ),
        )
    };
    let raw: &RawValue = serde_json::from_slice(&kv.value).map_err(|e| not_json(e.to_string()))?;
    if !raw.get().starts_with('{') {
        return Err(not_json(format!(
            "it starts with {:?}",
            raw.get().chars().next()
        )));
    }
    let compact;
    let value = if raw.get().contains('\n') {
        let parsed: Value = serde_json::from_str(raw.get()).map_err(|e| not_json(e.to_string()))?;
        compact = RawValue::from_string(parsed.to_string()).expect("JSON is JSON");
        &*compact
    } else {
        raw
    };
    Ok(json_line(&Line {
        key: kv.key.clone(),
        value,
    }))
}

/// A backup as read from its file, checked.
#[derive(Debug, Clone)]
pub struct Backup {
    /// Its first line.
    pub header: Header,
    /// Every key with the bytes stored under it, in key order.
    pub objects: Vec<(String, Vec<u8>)>,
    /// The kind of each object (its place in [`crds::KINDS`]), in the same order.
    kinds: Vec<usize>,
}

impl Backup {
    /// How many objects of each kind (by plural), in the order of [`crds::KINDS`].
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        for kind in &self.kinds {
            *counts.entry(*kind).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(kind, n)| (crds::KINDS[kind].plural, n))
            .collect()
    }

    /// The counts as text: `1 namespaces, 2 clusters, 5 instances`.
    pub fn summary(&self) -> String {
        let counts = self.counts();
        if counts.is_empty() {
            return "no objects".into();
        }
        counts
            .iter()
            .map(|(plural, n)| format!("{n} {plural}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Write `backup` into the embedded store in `dir` (new, or holding no object; no
/// server on it), all of it in one transaction, revisions from [`REVISION_BUMP`] past
/// the backup's. Returns the store's revision. See
/// [`EmbeddedStore::load`](crate::storage::embedded::EmbeddedStore::load) for the errors.
pub fn restore_embedded(dir: &Path, backup: &Backup) -> Result<i64, StorageError> {
    crate::storage::embedded::EmbeddedStore::load(
        dir,
        backup.header.revision.saturating_add(REVISION_BUMP),
        &backup.objects,
    )
}

/// Why a backup file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not what the format says.
    #[error("{}: line {line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line's number (from 1).
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The file ends before its end line.
    #[error("{}: truncated after line {lines}: no end line (the backup did not finish, or the file was cut)", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The lines it has.
        lines: usize,
    },
}

/// Read and check the backup at `path`.
pub fn read(path: &Path) -> Result<Backup, BackupError> {
    let file = std::fs::File::open(path).map_err(|source| BackupError::Read {
        path: path.into(),
        source,
    })?;
    parse(path, std::io::BufReader::new(file))
}

/// Read and check a backup from `input`; `path` names it in errors.
pub fn parse(path: &Path, input: impl BufRead) -> Result<Backup, BackupError> {
    let invalid = |line: usize, message: String| BackupError::Invalid {
        path: path.into(),
        line,
        message,
    };
    let mut header: Option<Header> = None;
    let mut objects: Vec<(String, Vec<u8>)> = Vec::new();
    let mut kinds = Vec::new();
    let mut ended = false;
    let mut lines = 0;
    for (i, text) in input.split(b'\n').enumerate() {
        let number = i + 1;
        let text = text.map_err(|source| BackupError::Read {
            path: path.into(),
            source,
        })?;
        lines = number;
        if ended {
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Err(invalid(number, "a line after the end line".into()));
        }
        if header.is_none() {
            header = Some(parse_header(&text).map_err(|m| invalid(number, m))?);
            continue;
        }
        let fields: BTreeMap<String, &RawValue> =
            serde_json::from_slice(&text).map_err(|e| invalid(number, in_line(&e)))?;
        if fields.contains_key("end") {
            let end: End = serde_json::from_slice(&text)
                .map_err(|e| invalid(number, format!("end line: {}", in_line(&e))))?;
            if end.end.objects != objects.len() {
                return Err(invalid(
                    number,
                    format!(
                        "end.objects: {} objects announced, {} in the file",
                        end.end.objects,
                        objects.len()
                    ),
                ));
            }
            ended = true;
            continue;
        }
        let line: Line = serde_json::from_slice(&text).map_err(|e| invalid(number, in_line(&e)))?;
        if let Some((previous, _)) = objects.last() {
            if line.key.as_str() <= previous.as_str() {
                return Err(invalid(
                    number,
                    format!("key: {:?} is not after the previous key {previous:?} (keys come in order, once each)", line.key),
                ));
            }
        }
        let kind = check_object(&line.key, line.value).map_err(|m| invalid(number, m))?;
        objects.push((line.key, line.value.get().as_bytes().to_vec()));
        kinds.push(kind);
    }
    let Some(header) = header else {
        return Err(invalid(
            1,
            "the file is empty: expected the backup's header".into(),
        ));
    };
    if !ended {
        return Err(BackupError::Truncated {
            path: path.into(),
            lines,
        });
    }
    Ok(Backup {
        header,
        objects,
        kinds,
    })
}

/// A JSON error within one line: serde's message, with its column (its line is always 1).
fn in_line(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let message = text
        .rfind(" at line ")
        .map_or(text.as_str(), |at| &text[..at]);
    if e.column() == 0 {
        message.to_string()
    } else {
        format!("{message} (column {})", e.column())
    }
}

fn parse_header(text: &[u8]) -> Result<Header, String> {
    let value: Value =
        serde_json::from_slice(text).map_err(|e| format!("header: {}", in_line(&e)))?;
    if value.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(format!(
            "format: expected {FORMAT:?}: this is not a backup of oakestra backup"
        ));
    }
    let header: Header = serde_json::from_value(value).map_err(|e| format!("header: {e}"))?;
    if header.version != VERSION {
        return Err(format!(
            "version: {} (this oakestra reads version {VERSION})",
            header.version
        ));
    }
    Ok(header)
}

/// The kind of the object at `key` (its place in [`crds::KINDS`]), once its value is
/// that object: a JSON object of the kind, named and namespaced as the key says.
fn check_object(key: &str, value: &RawValue) -> Result<usize, String> {
    let (at, namespace, name) = split_key(key)?;
    let kind = &crds::KINDS[at];
    let object: Value = serde_json::from_str(value.get()).map_err(|e| format!("value: {e}"))?;
    if !object.is_object() {
        return Err("value: expected a JSON object".into());
    }
    let field = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    if field("/kind") != Some(kind.kind) {
        return Err(format!(
            "value.kind: {:?}, but key {key:?} is of a {}",
            field("/kind").unwrap_or_default(),
            kind.kind
        ));
    }
    if field("/metadata/name") != Some(name) {
        return Err(format!(
            "value.metadata.name: {:?}, but key {key:?} names {name:?}",
            field("/metadata/name").unwrap_or_default()
        ));
    }
    if namespace.is_some() && field("/metadata/namespace") != namespace {
        return Err(format!(
            "value.metadata.namespace: {:?}, but key {key:?} is in {:?}",
            field("/metadata/namespace").unwrap_or_default(),
            namespace.unwrap_or_default()
        ));
    }
    Ok(at)
}

/// The kind (its place in [`crds::KINDS`]), namespace and name a storage key names
/// (`object::key`'s layout).
fn split_key(key: &str) -> Result<(usize, Option<&str>, &str), String> {
    let at = crds::KINDS
        .iter()
        .position(|k| key.starts_with(&crate::object::key(k, None, "")))
        .ok_or_else(|| {
            format!("key: {key:?} is not the key of an object of a kind this oakestra serves")
        })?;
    let kind = &crds::KINDS[at];
    let rest = &key[crate::object::key(kind, None, "").len()..];
    let parts: Vec<&str> = rest.split('/').collect();
    match (kind.namespaced, parts.as_slice()) {
        (true, [ns, name]) if !ns.is_empty() && !name.is_empty() => Ok((at, Some(ns), name)),
        (false, [name]) if !name.is_empty() => Ok((at, None, name)),
        _ => Err(format!(
            "key: {key:?} is not a {} key (/…/{}/{}NAME)",
            kind.kind,
            kind.plural,
            if kind.namespaced { "NAMESPACE/" } else { "" }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};

    fn header() -> String {
        r#"{"format":"oakestra-backup","version":1,"revision":7,"takenAt":"2025-01-01T00:00:00Z","store":"embedded"}"#.into()
    }
    fn ns(name: &str) -> String {
        format!(
            r#"{{"key":"/core/namespaces/{name}","value":{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}}}"#
        )
    }
    fn svc(ns: &str, name: &str) -> String {
        format!(
            r#"{{"key":"/oakestra.io/services/{ns}/{name}","value":{{"apiVersion":"oakestra.io/v1","kind":"Service","metadata":{{"name":"{name}","namespace":"{ns}"}},"spec":{{}}}}}}"#
        )
    }

    fn parsed(lines: &[String]) -> Result<Backup, String> {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        parse(Path::new("b.jsonl"), text.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn files_are_checked_line_by_line() {
        let end = |n: usize| format!(r#"{{"end":{{"objects":{n}}}}}"#);
        let good = vec![header(), ns("default"), svc("default", "web"), end(2)];
        let backup = parsed(&good).unwrap();
        assert_eq!(backup.header.revision, 7);
        assert_eq!(backup.summary(), "1 namespaces, 1 services");
        assert_eq!(backup.objects[1].0, "/oakestra.io/services/default/web");

        let cases: Vec<(&str, Vec<String>, &str)> = vec![
            ("empty", vec![], "b.jsonl: line 1: the file is empty"),
            (
                "not a backup",
                vec![r#"{"a":1}"#.into()],
                "b.jsonl: line 1: format: expected",
            ),
            (
                "newer version",
                vec![header().replace(r#""version":1"#, r#""version":2"#)],
                "line 1: version: 2",
            ),
            (
                "no end line",
                vec![header(), ns("default")],
                "b.jsonl: truncated after line 2: no end line",
            ),
            (
                "cut inside a line",
                vec![header(), ns("default")[..30].to_string()],
                "b.jsonl: line 2: EOF while parsing",
            ),
            (
                "wrong count",
                vec![header(), ns("default"), end(3)],
                "line 3: end.objects: 3 objects announced, 1 in the file",
            ),
            (
                "after the end",
                vec![header(), end(0), ns("default")],
                "line 3: a line after the end line",
            ),
            (
                "out of order",
                vec![header(), svc("default", "web"), ns("default"), end(2)],
                "line 3: key: \"/core/namespaces/default\" is not after",
            ),
            (
                "twice",
                vec![header(), ns("a"), ns("a"), end(2)],
                "line 3: key:",
            ),
            (
                "unknown kind",
                vec![
                    header(),
                    r#"{"key":"/x/things/a","value":{}}"#.into(),
                    end(1),
                ],
                "line 2: key: \"/x/things/a\" is not the key of an object",
            ),
            (
                "name differs",
                vec![
                    header(),
                    ns("a").replacen(r#""name":"a""#, r#""name":"b""#, 1),
                    end(1),
                ],
                "line 2: value.metadata.name: \"b\", but key",
            ),
            (
                "kind differs",
                vec![header(), ns("a").replace("Namespace", "Service"), end(1)],
                "line 2: value.kind: \"Service\"",
            ),
            (
                "namespace differs",
                vec![
                    header(),
                    svc("default", "web").replace(r#""namespace":"default""#, r#""namespace":"x""#),
                    end(1),
                ],
                "line 2: value.metadata.namespace",
            ),
            (
                "no value",
                vec![header(), r#"{"key":"/core/namespaces/a"}"#.into(), end(1)],
                "line 2: missing field `value`",
            ),
            (
                "a value not an object",
                vec![
                    header(),
                    r#"{"key":"/core/namespaces/a","value":[1]}"#.into(),
                    end(1),
                ],
                "line 2: value: expected a JSON object",
            ),
        ];
        for (what, lines, want) in cases {
            let got = parsed(&lines).map(|b| b.summary());
            match got {
                Err(e) => assert!(e.contains(want), "{what}: {e}\n  wanted: {want}"),
                Ok(s) => panic!("{what}: accepted ({s})"),
            }
        }
    }

    #[tokio::test]
    async fn a_snapshot_is_every_key_at_one_revision_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Storage> =
            Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
        let value = |ns: &str, name: &str| {
            let v = serde_json::json!({"apiVersion": "oakestra.io/v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns}, "spec": {"n": "x\ny"}});
            serde_json::to_vec_pretty(&v).unwrap()
        };
        // Several pages, values pretty-printed (on several lines).
        const N: usize = 10;
        for i in 0..N {
            let name = format!("s{i:04}");
            store
                .create(
                    &format!("/oakestra.io/services/default/{name}"),
                    value("default", &name),
                )
                .await
                .unwrap();
        }
        let mut lines = paged(store.clone(), 3);
        let first = lines.next().await.unwrap().unwrap();
        // Written after the first page was read: not in the snapshot.
        store
            .create("/oakestra.io/services/default/zzz", value("default", "zzz"))
            .await
            .unwrap();
        store
            .delete("/oakestra.io/services/default/s0008", None)
            .await
            .unwrap();
        let mut text = first.to_vec();
        while let Some(chunk) = lines.next().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        let backup = parse(Path::new("x"), text.as_slice()).unwrap();
        assert_eq!(
            backup.objects.len(),
            N,
            "{}",
            String::from_utf8_lossy(&text)
        );
        assert_eq!(backup.header.revision, N as i64);
        assert_eq!(backup.header.store, "embedded");
        let (key, bytes) = &backup.objects[8];
        assert_eq!(key, "/oakestra.io/services/default/s0008");
        let object: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(object["spec"]["n"], "x\ny");
        drop(lines);
        drop(store);

        // Restored: into a new store, every key with its bytes, past the bump; a watch
        // from a revision of the old store is too old. Not into one that holds objects,
        // nor into one a process holds.
        let into = tempfile::tempdir().unwrap();
        let revision = restore_embedded(into.path(), &backup).unwrap();
        assert_eq!(revision, N as i64 + REVISION_BUMP + N as i64);
        match restore_embedded(into.path(), &backup) {
            Err(StorageError::AlreadyExists { key }) => {
                assert_eq!(key, "/oakestra.io/services/default/s0000")
            }
            other => panic!("restored twice: {other:?}"),
        }
        let restored = EmbeddedStore::open(into.path(), EmbeddedOptions::default()).unwrap();
        let held = restore_embedded(into.path(), &backup).unwrap_err();
        assert!(crate::storage::embedded::is_held(&held), "{held}");
        assert!(!crate::storage::embedded::is_held(&StorageError::backend(
            "embedded", "x"
        )));
        let list = restored.list(ListRequest::default()).await.unwrap();
        assert_eq!(list.revision, revision);
        let got: Vec<(String, Vec<u8>)> = list
            .items
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.to_vec()))
            .collect();
        assert_eq!(got, backup.objects);
        assert!(
            list.items[0].mod_revision > REVISION_BUMP,
            "{:?}",
            list.items[0]
        );
        assert!(matches!(
            restored.watch("/", N as i64).await.err(),
            Some(StorageError::TooOld { .. })
        ));
    }
}
