//! The embedded store: a `redb` file plus an in-memory event history for watches.
//!
//! Writes go through one writer thread that applies every queued operation in a single
//! `redb` transaction and commits it durably (group commit): a write is acknowledged
//! only after its transaction is on disk, so it survives `kill -9`. Each operation gets
//! the next global revision. After a commit the writer appends the events to a bounded
//! history and broadcasts them; a watch replays the history after its revision and then
//! follows the broadcast, and one that falls behind the broadcast catches up from the
//! history. A revision older than the history is [`StorageError::TooOld`].
//!
//! **Memory.** The history is what the store holds beyond redb's own cache: at
//! [`EmbeddedOptions::history`] events of 3-KB Instances, tens of MiB. An update's
//! event also carries the value it replaced; when that value is the one an event of the
//! history wrote, the two share one buffer ([`bytes::Bytes`]) instead of a copy each.
//! The broadcast channel holds only [`LIVE`] events (a channel keeps every slot's
//! event until it is overwritten, so a larger one kept events the history had already
//! dropped). redb's page cache is bounded to [`CACHE_BYTES`].
//!
//! **Lazy keys.** Writes under [`EmbeddedOptions::lazy_prefixes`] (the server passes
//! its best-effort kinds: Leases and Events, which their writers repeat) may be
//! acknowledged before they are on disk: a batch of only such writes is committed
//! without `fsync`, and the writer makes everything durable at the next other write or
//! within [`LAZY_FOR`], whichever comes first; such a batch first waits up to
//! [`LAZY_LINGER`] for more writes to share its commit. A crash can lose up to
//! [`LAZY_FOR`] of them, never anything else. Revisions stay safe: each durable commit
//! reserves [`REVISION_RESERVE`] revisions ahead, lazy commits stay inside the
//! reservation, and a store reopened after a crash starts past it, so no revision that
//! a client may have seen is handed out twice; a watch resuming from before that point
//! gets `TooOld` and relists. A clean close gives the reservation back.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use super::{
    KeyValue, ListRequest, ListResponse, Result, Storage, StorageError, WatchEvent, WatchStream,
};

/// The store's file in its directory.
pub const FILE: &str = "oakestra.redb";

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";
/// Revisions at or below this one may have been handed out by lazy commits that a
/// crash lost: a reopened store starts past it.
const RESERVED_KEY: &str = "reserved";
/// Longest a lazy write waits before the writer makes it durable.
pub const LAZY_FOR: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest a batch of only lazy writes waits for more writes before it commits: node
/// Leases arrive spread out, one per node per beat, and each commit of a copy-on-write
/// B-tree rewrites whole pages, so a commit per renewal cost more than the renewal.
pub const LAZY_LINGER: std::time::Duration = std::time::Duration::from_millis(50);
/// Revisions each durable commit reserves for lazy commits after it.
pub const REVISION_RESERVE: i64 = 1 << 20;
/// Most operations applied in one transaction.
const MAX_BATCH: usize = 512;
/// Events the broadcast channel holds: a watch further behind catches up from the
/// history.
pub const LIVE: usize = 1024;
/// redb's page cache (a tenth of it buffers a transaction's writes). redb's default,
/// 1 GiB, keeps every page it has read or written until then: the whole file of a
/// root after a burst of 10,000 Instances, tens of MiB resident beside the objects
/// the server itself keeps. Pages beyond this are read again from the file, i.e.
/// from the kernel's page cache, which the process's resident memory does not count.
pub const CACHE_BYTES: usize = 16 << 20;

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Events kept in memory for watches to resume from.
    pub history: usize,
    /// Keys under these prefixes may be committed lazily (see the module docs).
    pub lazy_prefixes: Vec<String>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            history: 10_000,
            lazy_prefixes: Vec::new(),
        }
    }
}

enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: i64,
    },
    Delete {
        key: String,
        expected: Option<i64>,
    },
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<KeyValue>>,
}

/// An event with the value it replaced, so a list can be rewound to an older revision.
struct Entry {
    event: WatchEvent,
    previous: Option<KeyValue>,
}

struct History {
    events: VecDeque<Entry>,
    capacity: usize,
    /// Every event with a revision greater than this is still in `events`.
    complete_after: i64,
    /// Revision of the newest published event (or of the store at open).
    published: i64,
}

impl History {
    /// The value the history's event at `revision` wrote to `key`, if it still has it.
    fn value_at(&self, key: &str, revision: i64) -> Option<&bytes::Bytes> {
        let i = self
            .events
            .partition_point(|e| e.event.revision() < revision);
        let kv = self.events.get(i)?.event.kv();
        (kv.mod_revision == revision
            && kv.key == key
            && !matches!(self.events[i].event, WatchEvent::Deleted(_)))
        .then_some(&kv.value)
    }

    /// The events under `prefix` after revision `after`, or [`StorageError::TooOld`].
    fn after(&self, prefix: &str, after: i64) -> Result<VecDeque<WatchEvent>> {
        if after < self.complete_after {
            return Err(StorageError::TooOld {
                requested: after,
                oldest: self.complete_after,
            });
        }
        let from = self.events.partition_point(|e| e.event.revision() <= after);
        Ok(self
            .events
            .range(from..)
            .map(|e| &e.event)
            .filter(|e| e.kv().key.starts_with(prefix))
            .cloned()
            .collect())
    }

    /// Make `entry`'s copies of the value it replaced (read back from redb) share the
    /// buffer of the event that wrote that value, when the history still has it.
    fn share_previous(&self, entry: &mut Entry) {
        let Some(previous) = &entry.previous else {
            return;
        };
        let Some(value) = self.value_at(&previous.key, previous.mod_revision).cloned() else {
            return;
        };
        if let Some(p) = entry.previous.as_mut() {
            p.value = value.clone();
        }
        match &mut entry.event {
            WatchEvent::Updated { prev: Some(p), .. } => p.value = value,
            WatchEvent::Deleted(kv) => kv.value = value,
            _ => {}
        }
    }
}

struct Shared {
    db: Database,
    history: Mutex<History>,
    live: broadcast::Sender<WatchEvent>,
}

/// A durable single-file store; the default backend.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: Option<std::sync::mpsc::Sender<Request>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EmbeddedStore {
    /// Stop the writer after it has finished what is queued, so the file can be reopened.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `error` says the store's file is held by another process (a running
/// server): redb locks the file for as long as one process has it open, and has no
/// read-only open beside it.
pub fn is_held(error: &StorageError) -> bool {
    let StorageError::Backend {
        source: Some(source),
        ..
    } = error
    else {
        return false;
    };
    matches!(
        source.downcast_ref::<redb::DatabaseError>(),
        Some(redb::DatabaseError::DatabaseAlreadyOpen)
    )
}

/// A failure of redb (or of the task running a read), kept as the source.
fn backend_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::backend_caused("embedded", e.to_string(), e)
}

/// A failure with no underlying error (the writer is gone).
fn stopped(message: &str) -> StorageError {
    StorageError::backend("embedded", message)
}

fn encode(create: i64, modified: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, raw: &[u8]) -> KeyValue {
    let num = |r: &[u8]| i64::from_le_bytes(r.try_into().expect("8 bytes"));
    KeyValue {
        key: key.to_string(),
        create_revision: num(&raw[0..8]),
        mod_revision: num(&raw[8..16]),
        value: bytes::Bytes::copy_from_slice(&raw[16..]),
    }
}

/// The database file of the store in `dir`, created with its directory if missing
/// (another process holding it is an error [`is_held`] recognizes), with a page cache
/// of [`CACHE_BYTES`].
fn create_database(dir: &Path) -> Result<Database> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StorageError::backend_caused("embedded", format!("creating {}: {e}", dir.display()), e)
    })?;
    let path = dir.join(FILE);
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(&path)
        .map_err(|e| {
            StorageError::backend_caused("embedded", format!("opening {}: {e}", path.display()), e)
        })
}

impl EmbeddedStore {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        let db = create_database(dir)?;
        let txn = db.begin_write().map_err(backend_err)?;
        let revision = {
            txn.open_table(OBJECTS).map_err(backend_err)?;
            let mut meta = txn.open_table(META).map_err(backend_err)?;
            let value = |key| -> Result<i64> {
                Ok(meta
                    .get(key)
                    .map_err(backend_err)?
                    .map(|g| g.value())
                    .unwrap_or(0))
            };
            // Past every revision a lost lazy commit may have handed out.
            let revision = value(REVISION_KEY)?.max(value(RESERVED_KEY)?);
            meta.insert(REVISION_KEY, revision).map_err(backend_err)?;
            meta.insert(RESERVED_KEY, revision).map_err(backend_err)?;
            revision
        };
        txn.commit().map_err(backend_err)?;
        let (live, _) = broadcast::channel(LIVE);
        let shared = Arc::new(Shared {
            db,
            history: Mutex::new(History {
                events: VecDeque::new(),
                capacity: options.history.max(1),
                complete_after: revision,
                published: revision,
            }),
            live,
        });
        let (writer, requests) = std::sync::mpsc::channel();
        let writer_state = Writer {
            shared: shared.clone(),
            lazy_prefixes: options.lazy_prefixes,
            revision,
            reserved: revision,
            lazy_since: None,
        };
        let writer_thread = std::thread::Builder::new()
            .name("embedded-store-writer".into())
            .spawn(move || writer_state.run(requests))
            .map_err(backend_err)?;
        tracing::info!(path = %dir.join(FILE).display(), revision, "embedded store opened");
        Ok(EmbeddedStore {
            shared,
            writer: Some(writer),
            writer_thread: Some(writer_thread),
        })
    }

    /// Write `objects` (key, stored bytes) into the store in `dir`, which must hold no
    /// object (a new directory, or a store never written to), in one transaction: all of
    /// them or, on any failure, none. Their revisions follow each other from
    /// `after + 1` (or from the store's own revision, if that is higher), and a store
    /// opened on it starts past them, its watch history empty, so any older revision a
    /// client holds is answered `TooOld`. Another process holding the store (a running
    /// server) is an error that [`is_held`] recognizes; a store that holds objects is
    /// [`StorageError::AlreadyExists`] naming its first key. Returns the store's revision.
    pub fn load(dir: &Path, after: i64, objects: &[(String, Vec<u8>)]) -> Result<i64> {
        let db = create_database(dir)?;
        let txn = db.begin_write().map_err(backend_err)?;
        let revision = {
            let mut table = txn.open_table(OBJECTS).map_err(backend_err)?;
            if let Some(first) = table.iter().map_err(backend_err)?.next() {
                let (key, _) = first.map_err(backend_err)?;
                return Err(StorageError::AlreadyExists {
                    key: key.value().to_string(),
                });
            }
            let mut meta = txn.open_table(META).map_err(backend_err)?;
            let stored = |key| -> Result<i64> {
                Ok(meta
                    .get(key)
                    .map_err(backend_err)?
                    .map(|g| g.value())
                    .unwrap_or(0))
            };
            let mut revision = after.max(stored(REVISION_KEY)?).max(stored(RESERVED_KEY)?);
            for (key, value) in objects {
                revision += 1;
                table
                    .insert(key.as_str(), encode(revision, revision, value).as_slice())
                    .map_err(backend_err)?;
            }
            meta.insert(REVISION_KEY, revision).map_err(backend_err)?;
            meta.insert(RESERVED_KEY, revision).map_err(backend_err)?;
            revision
        };
        txn.commit().map_err(backend_err)?;
        Ok(revision)
    }

    async fn submit(&self, op: Op) -> Result<KeyValue> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .as_ref()
            .ok_or_else(|| stopped("store is closed"))?
            .send(Request { op, reply })
            .map_err(|_| stopped("writer thread stopped"))?;
        rx.await.map_err(|_| stopped("writer thread stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared.db))
            .await
            .map_err(backend_err)?
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    lazy_prefixes: Vec<String>,
    /// Revision of the last applied operation.
    revision: i64,
    /// The reservation on disk: lazy commits may hand out revisions up to it.
    reserved: i64,
    /// When the oldest lazy commit not yet on disk was made.
    lazy_since: Option<std::time::Instant>,
}

impl Writer {
    /// Apply queued operations in batches, one transaction each, until the store closes;
    /// then make everything durable and give the reservation back.
    fn run(mut self, requests: std::sync::mpsc::Receiver<Request>) {
        loop {
            let first = match self.lazy_since {
                None => requests.recv().ok(),
                Some(since) => {
                    match requests.recv_timeout(LAZY_FOR.saturating_sub(since.elapsed())) {
                        Ok(r) => Some(r),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            self.flush(false);
                            continue;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if self.lazy(&batch) {
                self.linger(&requests, &mut batch);
            }
            self.commit_batch(batch);
        }
        self.flush(true);
    }

    /// Whether `batch` may be committed without `fsync`.
    fn lazy(&self, batch: &[Request]) -> bool {
        let fresh = self.lazy_since.is_none_or(|t| t.elapsed() < LAZY_FOR);
        fresh
            && self.revision + (batch.len() as i64) < self.reserved
            && batch.iter().all(|r| self.lazy_key(r.op.key()))
    }

    fn lazy_key(&self, key: &str) -> bool {
        self.lazy_prefixes
            .iter()
            .any(|p| key.starts_with(p.as_str()))
    }

    /// Add to a lazy `batch` what arrives within [`LAZY_LINGER`]; a write that must be
    /// durable ends the wait (the batch then commits durably, at once).
    fn linger(&self, requests: &std::sync::mpsc::Receiver<Request>, batch: &mut Vec<Request>) {
        let until = std::time::Instant::now() + LAZY_LINGER;
        while batch.len() < MAX_BATCH {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let Ok(next) = requests.recv_timeout(left) else {
                break;
            };
            let lazy = self.lazy_key(next.op.key());
            batch.push(next);
            if !lazy {
                break;
            }
        }
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let start = self.revision;
        let lazy = self.lazy(&batch);
        match self.apply_batch(&batch, lazy, self.reserve()) {
            Ok(results) => {
                if lazy {
                    self.lazy_since.get_or_insert_with(std::time::Instant::now);
                } else {
                    self.lazy_since = None;
                }
                let events: Vec<Entry> = results.iter().filter_map(|(_, e)| e.clone()).collect();
                publish(&self.shared, events);
                for (req, (result, _)) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(result);
                }
            }
            Err(e) => {
                self.revision = start;
                let message = e.to_string();
                tracing::error!(error = %message, "embedded store transaction failed");
                for req in batch {
                    let _ = req.reply.send(Err(stopped(&message)));
                }
            }
        }
    }

    /// A durable commit of no operation: makes lazy commits durable.
    /// `closing`: give the reservation back, so a clean reopen continues where this
    /// store stopped.
    fn flush(&mut self, closing: bool) {
        if self.lazy_since.is_none() && !closing {
            return;
        }
        let reserve = if closing { 0 } else { self.reserve() };
        match self.apply_batch(&[], false, reserve) {
            Ok(_) => self.lazy_since = None,
            Err(e) => {
                tracing::error!(error = %e, "embedded store: flushing lazy writes failed");
                // Try again after another LAZY_FOR, not in a loop.
                self.lazy_since = Some(std::time::Instant::now());
            }
        }
    }

    /// One transaction: `batch`, the revision, and for a durable (not `lazy`) commit the
    /// reservation `reserve` revisions ahead.
    fn apply_batch(
        &mut self,
        batch: &[Request],
        lazy: bool,
        reserve: i64,
    ) -> Result<Vec<OpResult>> {
        let mut txn = self.shared.db.begin_write().map_err(backend_err)?;
        if lazy {
            txn.set_durability(redb::Durability::None);
        }
        let mut results = Vec::with_capacity(batch.len());
        {
            let mut objects = txn.open_table(OBJECTS).map_err(backend_err)?;
            for req in batch {
                results.push(apply_one(&mut objects, &req.op, &mut self.revision)?);
            }
            let mut meta = txn.open_table(META).map_err(backend_err)?;
            meta.insert(REVISION_KEY, self.revision)
                .map_err(backend_err)?;
            if !lazy {
                meta.insert(RESERVED_KEY, self.revision + reserve)
                    .map_err(backend_err)?;
            }
        }
        txn.commit().map_err(backend_err)?;
        if !lazy {
            self.reserved = self.revision + reserve;
        }
        Ok(results)
    }

    /// Revisions a durable commit reserves ahead: none without lazy keys, so a store
    /// without them never skips revisions, not even after a crash.
    fn reserve(&self) -> i64 {
        if self.lazy_prefixes.is_empty() {
            0
        } else {
            REVISION_RESERVE
        }
    }
}

type OpResult = (Result<KeyValue>, Option<Entry>);

impl Clone for Entry {
    fn clone(&self) -> Self {
        Entry {
            event: self.event.clone(),
            previous: self.previous.clone(),
        }
    }
}

fn apply_one(
    objects: &mut redb::Table<&str, &[u8]>,
    op: &Op,
    revision: &mut i64,
) -> Result<OpResult> {
    let key = op.key();
    let current = objects
        .get(key)
        .map_err(backend_err)?
        .map(|g| decode(key, g.value()));
    let previous = current.clone();
    let outcome = match (op, current) {
        (Op::Create { .. }, Some(_)) => Err(StorageError::AlreadyExists { key: key.into() }),
        (Op::Create { value, .. }, None) => {
            *revision += 1;
            let kv = KeyValue {
                key: key.into(),
                value: value.clone().into(),
                create_revision: *revision,
                mod_revision: *revision,
            };
            objects
                .insert(key, encode(*revision, *revision, value).as_slice())
                .map_err(backend_err)?;
            Ok((kv.clone(), WatchEvent::Created(kv)))
        }
        (Op::Update { .. } | Op::Delete { .. }, None) => {
            Err(StorageError::NotFound { key: key.into() })
        }
        (Op::Update { expected, .. }, Some(cur)) if cur.mod_revision != *expected => {
            Err(StorageError::Conflict {
                key: key.into(),
                expected: *expected,
                actual: cur.mod_revision,
            })
        }
        (
            Op::Delete {
                expected: Some(expected),
                ..
            },
            Some(cur),
        ) if cur.mod_revision != *expected => Err(StorageError::Conflict {
            key: key.into(),
            expected: *expected,
            actual: cur.mod_revision,
        }),
        (Op::Update { value, .. }, Some(cur)) => {
            *revision += 1;
            let kv = KeyValue {
                key: key.into(),
                value: value.clone().into(),
                create_revision: cur.create_revision,
                mod_revision: *revision,
            };
            objects
                .insert(
                    key,
                    encode(cur.create_revision, *revision, value).as_slice(),
                )
                .map_err(backend_err)?;
            Ok((
                kv.clone(),
                WatchEvent::Updated {
                    kv,
                    prev: Some(cur),
                },
            ))
        }
        (Op::Delete { .. }, Some(mut cur)) => {
            *revision += 1;
            objects.remove(key).map_err(backend_err)?;
            cur.mod_revision = *revision;
            Ok((cur.clone(), WatchEvent::Deleted(cur)))
        }
    };
    Ok(match outcome {
        Ok((kv, event)) => (Ok(kv), Some(Entry { event, previous })),
        Err(e) => (Err(e), None),
    })
}

fn publish(shared: &Shared, entries: Vec<Entry>) {
    if entries.is_empty() {
        return;
    }
    let mut h = shared.history.lock().expect("history lock");
    for mut entry in entries {
        h.share_previous(&mut entry);
        h.published = entry.event.revision();
        if h.events.len() == h.capacity {
            if let Some(old) = h.events.pop_front() {
                h.complete_after = old.event.revision();
            }
        }
        // No receivers is fine: nobody watches.
        let _ = shared.live.send(entry.event.clone());
        h.events.push_back(entry);
    }
}

fn read_revision(txn: &redb::ReadTransaction) -> Result<i64> {
    let meta = txn.open_table(META).map_err(backend_err)?;
    Ok(meta
        .get(REVISION_KEY)
        .map_err(backend_err)?
        .map(|g| g.value())
        .unwrap_or(0))
}

/// Every key under `prefix` at the snapshot `txn`, as a sorted map.
fn snapshot(
    txn: &redb::ReadTransaction,
    prefix: &str,
    start_after: Option<&str>,
) -> Result<BTreeMap<String, KeyValue>> {
    let objects = txn.open_table(OBJECTS).map_err(backend_err)?;
    let start = match start_after {
        Some(k) if k >= prefix => Bound::Excluded(k),
        _ => Bound::Included(prefix),
    };
    let mut out = BTreeMap::new();
    for entry in objects
        .range::<&str>((start, Bound::Unbounded))
        .map_err(backend_err)?
    {
        let (k, v) = entry.map_err(backend_err)?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        out.insert(key.to_string(), decode(key, v.value()));
    }
    Ok(out)
}

#[async_trait]
impl Storage for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend_err)?;
            let objects = txn.open_table(OBJECTS).map_err(backend_err)?;
            let found = objects.get(key.as_str()).map_err(backend_err)?;
            Ok(found.map(|g| decode(&key, g.value())))
        })
        .await
    }

    async fn list(&self, request: ListRequest) -> Result<ListResponse> {
        let shared = self.shared.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend_err)?;
            let snap_revision = read_revision(&txn)?;
            let mut items = snapshot(&txn, &request.prefix, request.start_after.as_deref())?;
            let revision = match request.revision {
                Some(r) if r < snap_revision => {
                    rewind(&shared, &mut items, &request, r, snap_revision)?;
                    r
                }
                _ => snap_revision,
            };
            let mut items: Vec<KeyValue> = items.into_values().collect();
            let limit = request.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
            let more = items.len() > limit;
            items.truncate(limit);
            Ok(ListResponse {
                items,
                revision,
                more,
            })
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        self.submit(Op::Create {
            key: key.into(),
            value,
        })
        .await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: i64) -> Result<KeyValue> {
        self.submit(Op::Update {
            key: key.into(),
            value,
            expected: expected_revision,
        })
        .await
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<KeyValue> {
        self.submit(Op::Delete {
            key: key.into(),
            expected: expected_revision,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        let (backlog, live, published) = {
            let h = self.shared.history.lock().expect("history lock");
            (
                h.after(prefix, after_revision)?,
                self.shared.live.subscribe(),
                h.published,
            )
        };
        let follow = Follow {
            shared: self.shared.clone(),
            live,
            prefix: prefix.to_string(),
            last: after_revision.max(published),
            pending: backlog,
            ended: false,
        };
        Ok(futures::stream::unfold(follow, Follow::next).boxed())
    }

    async fn revision(&self) -> Result<i64> {
        self.read(|db| read_revision(&db.begin_read().map_err(backend_err)?))
            .await
    }
}

/// One watch's position: what it has still to get from the history, then the channel.
struct Follow {
    shared: Arc<Shared>,
    live: broadcast::Receiver<WatchEvent>,
    prefix: String,
    /// Every event up to this revision was given (or is in `pending`, or was skipped).
    last: i64,
    pending: VecDeque<WatchEvent>,
    ended: bool,
}

impl Follow {
    /// The next event; a watch that fell behind the history gets one
    /// [`StorageError::TooOld`] and ends (it must relist).
    async fn next(mut self) -> Option<(Result<WatchEvent>, Follow)> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last = self.last.max(event.revision());
                return Some((Ok(event), self));
            }
            match self.live.recv().await {
                Ok(event) => {
                    if event.revision() <= self.last {
                        continue;
                    }
                    self.last = event.revision();
                    if event.kv().key.starts_with(self.prefix.as_str()) {
                        return Some((Ok(event), self));
                    }
                }
                // Behind the channel: what it missed is in the history, unless the
                // history has moved past it too.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let missed = {
                        let h = self.shared.history.lock().expect("history lock");
                        h.after(&self.prefix, self.last)
                    };
                    match missed {
                        Ok(missed) => self.pending = missed,
                        Err(e) => {
                            self.ended = true;
                            return Some((Err(e), self));
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Undo the events after `target` (up to `from`, the snapshot's revision) to list as of
/// an older revision, from the in-memory history.
fn rewind(
    shared: &Shared,
    items: &mut BTreeMap<String, KeyValue>,
    request: &ListRequest,
    target: i64,
    from: i64,
) -> Result<()> {
    let h = loop {
        let h = shared.history.lock().expect("history lock");
        if h.published >= from {
            break h;
        }
        // The snapshot's last commit is being published right now.
        drop(h);
        std::thread::yield_now();
    };
    if target < h.complete_after {
        return Err(StorageError::TooOld {
            requested: target,
            oldest: h.complete_after,
        });
    }
    let in_range = |k: &str| {
        k.starts_with(&request.prefix) && request.start_after.as_deref().is_none_or(|s| k > s)
    };
    for entry in h.events.iter().rev() {
        let rev = entry.event.revision();
        if rev <= target {
            break;
        }
        let key = &entry.event.kv().key;
        if rev > from || !in_range(key) {
            continue;
        }
        match &entry.previous {
            Some(previous) => items.insert(key.clone(), previous.clone()),
            None => items.remove(key),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, history: usize) -> EmbeddedStore {
        let options = EmbeddedOptions {
            history,
            ..EmbeddedOptions::default()
        };
        EmbeddedStore::open(dir, options).unwrap()
    }

    #[tokio::test]
    async fn a_watch_behind_the_broadcast_catches_up_from_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 8 * LIVE);
        let from = store.revision().await.unwrap();
        let watch = store.watch("/t/", from).await.unwrap();
        // Nothing is read while twice the channel's capacity is written (and other
        // keys, which the watch skips).
        let n = 2 * LIVE + 10;
        for i in 0..n {
            store.create(&format!("/t/{i}"), vec![b'x']).await.unwrap();
            store.create(&format!("/u/{i}"), vec![b'y']).await.unwrap();
        }
        let got: Vec<i64> = watch
            .take(n)
            .map(|e| e.expect("no error").revision())
            .collect()
            .await;
        assert_eq!(got.len(), n);
        assert!(got.windows(2).all(|w| w[0] + 2 == w[1]), "in order, no gap");
    }

    #[tokio::test]
    async fn a_watch_behind_the_whole_history_is_too_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 10);
        let from = store.revision().await.unwrap();
        let watch = store.watch("/t/", from).await.unwrap();
        for i in 0..LIVE + 20 {
            store.create(&format!("/t/{i}"), vec![b'x']).await.unwrap();
        }
        let got: Vec<_> = watch.collect().await;
        assert!(
            matches!(got.last(), Some(Err(StorageError::TooOld { .. }))),
            "ends with TooOld"
        );
        assert_eq!(got.iter().filter(|e| e.is_err()).count(), 1);
    }

    #[tokio::test]
    async fn the_value_an_update_replaced_shares_the_buffer_that_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 100);
        let from = store.revision().await.unwrap();
        let watch = store.watch("/t/", from).await.unwrap();
        let a = store.create("/t/a", b"one".to_vec()).await.unwrap();
        let b = store
            .update("/t/a", b"two".to_vec(), a.mod_revision)
            .await
            .unwrap();
        store.delete("/t/a", Some(b.mod_revision)).await.unwrap();
        let events: Vec<WatchEvent> = watch.take(3).map(Result::unwrap).collect().await;
        let (
            WatchEvent::Created(created),
            WatchEvent::Updated {
                kv,
                prev: Some(prev),
            },
        ) = (&events[0], &events[1])
        else {
            panic!("created, then updated: {events:?}");
        };
        assert_eq!(prev.value, created.value);
        assert_eq!(prev.value.as_ptr(), created.value.as_ptr(), "one buffer");
        let WatchEvent::Deleted(deleted) = &events[2] else {
            panic!("then deleted: {events:?}");
        };
        assert_eq!(deleted.value.as_ptr(), kv.value.as_ptr(), "one buffer");
        // A list as of the create still reads the first value (from the history).
        let listed = store
            .list(ListRequest {
                prefix: "/t/".into(),
                revision: Some(a.mod_revision),
                ..ListRequest::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.items[0].value, &b"one"[..]);
    }
}
