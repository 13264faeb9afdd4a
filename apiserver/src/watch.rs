//! The shared watch fan-out.
//!
//! One storage watch over every key feeds a bounded ring of recent events and a
//! broadcast channel; each HTTP watcher subscribes to it, replays the ring after its
//! resourceVersion and follows the broadcast. Each event's JSON is encoded once, not
//! once per watcher. A watcher that asks for a version older than the ring gets "too
//! old" (410) and relists, as Kubernetes clients do.
//!
//! Memory: the ring keeps each change as the stored bytes only (of the version it
//! wrote and of the one it replaced), the very buffers the store's own history holds,
//! so the ring costs no copy of any object. The JSON sent to watchers (the stored bytes
//! with `metadata.resourceVersion` set) and the decoded view that selectors read (the
//! object without `metadata.managedFields`, which decoded were most of its memory) are
//! kept only by the live copy the broadcast carries, whose channel holds the last
//! [`LIVE`] changes; a write that starts from the hub's copy decodes its bytes. A
//! watcher that falls further behind than that catches up from the ring, each change
//! decoded and encoded for it as it goes; only one that falls behind the whole ring
//! must relist. At 10,000 recent changes of Instances the ring holding decoded objects
//! was most of a root's memory, and holding their JSON, 30 MiB of it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::object;
use crate::storage::{KeyValue, Storage, StorageError, WatchEvent};

/// Changes the broadcast channel holds: a watcher further behind catches up from the
/// ring.
pub const LIVE: usize = 1024;

/// A change, encoded once for every watcher.
#[derive(Debug)]
pub struct Change {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object's storage key.
    pub key: String,
    /// The storage revision of the change.
    pub revision: i64,
    /// The object as stored (for a deletion: its last version).
    stored: KeyValue,
    /// For `MODIFIED`: the version it replaced, as stored (to tell selector
    /// transitions).
    replaced: Option<KeyValue>,
    /// The JSON and decoded forms, kept by the live copy only (see the module docs);
    /// `None` in the ring's copies, which make them on demand.
    decoded: Option<Decoded>,
}

#[derive(Debug)]
struct Decoded {
    /// The object serialized, with `metadata.resourceVersion` set.
    json: bytes::Bytes,
    /// [`Change::view`] and [`Change::previous_view`], once made.
    view: OnceLock<Option<Arc<Value>>>,
    previous_view: OnceLock<Option<Arc<Value>>>,
}

/// The object in `kv` as selectors read it: decoded, with `metadata.resourceVersion`,
/// without `metadata.managedFields`.
fn view_of(kv: &KeyValue) -> Option<Value> {
    object::decode(kv).ok().map(without_managed_fields)
}

/// `object` without `metadata.managedFields`: decoded, they are most of an object's
/// memory (a map per level of each field set), and no selector reads them.
fn without_managed_fields(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    object
}

impl Change {
    /// The change `event` makes; `known` is the live copy of the hub's last change of
    /// the same key, if it is still alive: when it is the version this one replaced,
    /// its view is the previous version's (shared, not decoded again).
    fn from_event(event: &WatchEvent, known: Option<&Change>) -> Option<Change> {
        let kind = match event {
            WatchEvent::Created(_) => "ADDED",
            WatchEvent::Updated { .. } => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
        };
        let kv = event.kv();
        let object = object::decode(kv).ok()?;
        let replaced = match event {
            WatchEvent::Updated { prev, .. } => prev.clone(),
            _ => None,
        };
        let decoded = Decoded {
            json: serde_json::to_vec(&object).ok()?.into(),
            view: OnceLock::from(Some(Arc::new(without_managed_fields(object)))),
            previous_view: OnceLock::new(),
        };
        if let (Some(p), Some(known)) = (&replaced, known) {
            if known.revision == p.mod_revision && known.kind != "DELETED" {
                if let Some(previous) = known.decoded.as_ref().and_then(|d| d.view.get()) {
                    let _ = decoded.previous_view.set(previous.clone());
                }
            }
        }
        Some(Change {
            kind,
            key: kv.key.clone(),
            revision: kv.mod_revision,
            stored: kv.clone(),
            replaced,
            decoded: Some(decoded),
        })
    }

    /// The copy the ring keeps: the same change as stored, without its JSON and
    /// decoded forms.
    fn slim(&self) -> Change {
        Change {
            kind: self.kind,
            key: self.key.clone(),
            revision: self.revision,
            stored: self.stored.clone(),
            replaced: self.replaced.clone(),
            decoded: None,
        }
    }

    /// The object serialized, with `metadata.resourceVersion` set: the live copy's,
    /// encoded once for every watcher; a ring copy's, encoded anew by each call.
    pub fn json(&self) -> Option<bytes::Bytes> {
        self.encoded()
            .or_else(|| serde_json::to_vec(&self.object()?).ok().map(Into::into))
    }

    /// The JSON encoded once for every watcher, if this is a live copy.
    pub fn encoded(&self) -> Option<bytes::Bytes> {
        self.decoded.as_ref().map(|d| d.json.clone())
    }

    /// The whole object, with `metadata.resourceVersion` set, decoded by each call
    /// (what a write starts from).
    pub fn object(&self) -> Option<Value> {
        object::decode(&self.stored).ok()
    }

    /// The object as selectors read it: with `metadata.resourceVersion`, without
    /// `metadata.managedFields`; kept by the live copy, shared by its watchers.
    pub fn view(&self) -> Option<Arc<Value>> {
        let decode = || view_of(&self.stored).map(Arc::new);
        match &self.decoded {
            Some(d) => d.view.get_or_init(decode).clone(),
            None => decode(),
        }
    }

    /// For `MODIFIED`: the [`view`](Self::view) of the object before the change.
    pub fn previous_view(&self) -> Option<Arc<Value>> {
        let replaced = self.replaced.as_ref()?;
        let decode = || view_of(replaced).map(Arc::new);
        match &self.decoded {
            Some(d) => d.previous_view.get_or_init(decode).clone(),
            None => decode(),
        }
    }
}

#[derive(Clone, Debug)]
enum Message {
    Change(Arc<Change>),
    /// The hub lost continuity with storage; every watcher must relist.
    Reset,
}

/// The last change of a key: the ring's copy, and the live one while it lives.
struct Latest {
    kept: Arc<Change>,
    live: Weak<Change>,
}

struct Ring {
    changes: VecDeque<Arc<Change>>,
    /// The latest change of each key that has one in `changes`.
    by_key: HashMap<String, Latest>,
    capacity: usize,
    /// Every change after this revision is in `changes`.
    complete_after: i64,
    latest: i64,
}

impl Ring {
    /// The changes of keys under `prefix` after revision `after`, or why not.
    fn after(&self, prefix: &str, after: i64) -> Result<Vec<Arc<Change>>, WatchError> {
        if after < self.complete_after {
            return Err(WatchError::TooOld {
                requested: after,
                oldest: self.complete_after,
            });
        }
        // Changes are in revision order: start where `after` ends.
        let from = self.changes.partition_point(|c| c.revision <= after);
        Ok(self
            .changes
            .range(from..)
            .filter(|c| c.key.starts_with(prefix))
            .cloned()
            .collect())
    }
}

/// Fan-out of one storage watch to many watchers.
#[derive(Clone)]
pub struct WatchHub {
    ring: Arc<Mutex<Ring>>,
    live: broadcast::Sender<Message>,
    watchers: Arc<std::sync::atomic::AtomicI64>,
}

/// Why a watch ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The watch started before the oldest change the hub keeps.
    #[error(
        "too old resource version: {requested} (the oldest available is {oldest}); list again"
    )]
    TooOld {
        /// The revision asked for.
        requested: i64,
        /// The oldest revision available.
        oldest: i64,
    },
    /// The watcher fell behind the hub's ring, or the hub lost its storage watch.
    #[error("the watch fell behind or the server lost its storage watch; list again")]
    Expired,
}

impl WatchHub {
    /// Start following `store` from its current revision; `capacity` recent changes are
    /// kept for watchers that start slightly in the past.
    pub async fn start(store: Arc<dyn Storage>, capacity: usize) -> Result<WatchHub, StorageError> {
        let latest = store.revision().await?;
        let (live, _) = broadcast::channel(LIVE);
        let hub = WatchHub {
            ring: Arc::new(Mutex::new(Ring {
                changes: VecDeque::new(),
                by_key: HashMap::new(),
                capacity,
                complete_after: latest,
                latest,
            })),
            live,
            watchers: Arc::default(),
        };
        let stream = store.watch("/", latest).await?;
        tokio::spawn(hub.clone().follow(store, stream));
        Ok(hub)
    }

    /// Number of open watchers.
    pub fn watchers(&self) -> i64 {
        self.watchers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The newest version of `key` the hub has seen, when it still holds it and the
    /// object was not deleted. The store may already hold a newer one: a writer that
    /// starts from this must compare-and-swap on its revision (as `Registry::write`
    /// does) and read the store when that fails.
    pub fn latest_of(&self, key: &str) -> Option<Arc<Change>> {
        let ring = self.ring.lock().expect("ring lock");
        let latest = ring.by_key.get(key)?;
        let change = latest.live.upgrade().unwrap_or_else(|| latest.kept.clone());
        (change.kind != "DELETED").then_some(change)
    }

    /// The live copy of the hub's last change of `key`, while it lives.
    fn known_live(&self, key: &str) -> Option<Arc<Change>> {
        let ring = self.ring.lock().expect("ring lock");
        ring.by_key.get(key)?.live.upgrade()
    }

    /// Latest revision the hub has seen.
    pub fn latest(&self) -> i64 {
        self.ring.lock().expect("ring lock").latest
    }

    async fn follow(self, store: Arc<dyn Storage>, mut stream: crate::storage::WatchStream) {
        let mut backoff = Duration::from_millis(50);
        loop {
            while let Some(next) = stream.next().await {
                match next {
                    Ok(event) => {
                        backoff = Duration::from_millis(50);
                        let known = self.known_live(&event.kv().key);
                        if let Some(change) = Change::from_event(&event, known.as_deref()) {
                            self.publish(Arc::new(change));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "storage watch failed");
                        break;
                    }
                }
            }
            // Resume where we were; if that is gone, start over and reset watchers.
            loop {
                let from = self.latest();
                match store.watch("/", from).await {
                    Ok(s) => {
                        stream = s;
                        break;
                    }
                    Err(StorageError::TooOld { .. }) => match store.revision().await {
                        Ok(now) => self.reset(now),
                        Err(e) => tracing::warn!(error = %e, "storage unavailable"),
                    },
                    Err(e) => tracing::warn!(error = %e, "storage watch unavailable, retrying"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    fn publish(&self, change: Arc<Change>) {
        let mut ring = self.ring.lock().expect("ring lock");
        if change.revision <= ring.latest {
            return;
        }
        ring.latest = change.revision;
        if ring.changes.len() == ring.capacity {
            if let Some(old) = ring.changes.pop_front() {
                ring.complete_after = old.revision;
                if ring
                    .by_key
                    .get(&old.key)
                    .is_some_and(|c| Arc::ptr_eq(&c.kept, &old))
                {
                    ring.by_key.remove(&old.key);
                }
            }
        }
        let kept = Arc::new(change.slim());
        let latest = Latest {
            kept: kept.clone(),
            live: Arc::downgrade(&change),
        };
        ring.by_key.insert(change.key.clone(), latest);
        ring.changes.push_back(kept);
        let _ = self.live.send(Message::Change(change));
    }

    fn reset(&self, now: i64) {
        let mut ring = self.ring.lock().expect("ring lock");
        tracing::warn!(revision = now, "watch history lost; watchers will relist");
        ring.changes.clear();
        ring.by_key.clear();
        ring.complete_after = now;
        ring.latest = now;
        let _ = self.live.send(Message::Reset);
    }

    /// Changes of keys under `prefix` after revision `after`: from the ring, then live;
    /// a watcher that falls behind the live channel catches up from the ring.
    pub fn subscribe(
        &self,
        prefix: &str,
        after: i64,
    ) -> Result<impl Stream<Item = Result<Arc<Change>, WatchError>> + Send + 'static, WatchError>
    {
        let (backlog, rx) = {
            let ring = self.ring.lock().expect("ring lock");
            (ring.after(prefix, after)?, self.live.subscribe())
        };
        let state = Follow {
            ring: self.ring.clone(),
            rx,
            prefix: prefix.to_string(),
            last: backlog.last().map_or(after, |c| c.revision).max(after),
            pending: backlog.into(),
            ended: false,
            _guard: WatcherGuard::new(self.watchers.clone()),
        };
        Ok(futures::stream::unfold(state, Follow::next))
    }
}

/// One watcher's position: what it has still to see from the ring, then the channel.
struct Follow {
    ring: Arc<Mutex<Ring>>,
    rx: broadcast::Receiver<Message>,
    prefix: String,
    /// The revision of the last change this watcher was given (or skipped).
    last: i64,
    pending: VecDeque<Arc<Change>>,
    ended: bool,
    _guard: WatcherGuard,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Arc<Change>, WatchError>, Follow)> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(c) = self.pending.pop_front() {
                self.last = c.revision;
                return Some((Ok(c), self));
            }
            match self.rx.recv().await {
                Ok(Message::Change(c)) => {
                    if c.revision <= self.last {
                        continue;
                    }
                    self.last = c.revision;
                    if c.key.starts_with(self.prefix.as_str()) {
                        return Some((Ok(c), self));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Behind the channel: what it missed is in the ring, unless the
                    // ring has moved past it too.
                    let caught_up = {
                        let ring = self.ring.lock().expect("ring lock");
                        ring.after(&self.prefix, self.last)
                    };
                    match caught_up {
                        Ok(missed) => self.pending = missed.into(),
                        Err(_) => return self.end(),
                    }
                }
                Ok(Message::Reset) | Err(broadcast::error::RecvError::Closed) => return self.end(),
            }
        }
    }

    fn end(mut self) -> Option<(Result<Arc<Change>, WatchError>, Follow)> {
        self.ended = true;
        Some((Err(WatchError::Expired), self))
    }
}

/// Counts a watcher while its stream lives.
struct WatcherGuard(Arc<std::sync::atomic::AtomicI64>);

impl WatcherGuard {
    fn new(count: Arc<std::sync::atomic::AtomicI64>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WatcherGuard(count)
    }
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};

    /// A hub keeping `ring` changes over a fresh embedded store.
    async fn hub(dir: &std::path::Path, ring: usize) -> (Arc<dyn Storage>, WatchHub) {
        let store: Arc<dyn Storage> =
            Arc::new(EmbeddedStore::open(dir, EmbeddedOptions::default()).unwrap());
        let hub = WatchHub::start(store.clone(), ring).await.unwrap();
        (store, hub)
    }

    /// Create `n` objects under `/t/`, then wait until the hub has seen them.
    async fn create(store: &Arc<dyn Storage>, hub: &WatchHub, n: usize) -> i64 {
        let mut last = 0;
        for i in 0..n {
            let value = serde_json::to_vec(&serde_json::json!({"metadata": {"name": i}})).unwrap();
            last = store
                .create(&format!("/t/{i}"), value)
                .await
                .unwrap()
                .mod_revision;
        }
        while hub.latest() < last {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        last
    }

    #[tokio::test]
    async fn a_watcher_behind_the_live_channel_catches_up_from_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let (store, hub) = hub(dir.path(), 4 * LIVE).await;
        let from = hub.latest();
        let watch = hub.subscribe("/t/", from).unwrap();
        // Nothing is read while twice the channel's capacity is written.
        let n = 2 * LIVE + 10;
        create(&store, &hub, n).await;
        let got: Vec<_> = watch.take(n).collect().await;
        let revisions: Vec<i64> = got
            .iter()
            .map(|r| r.as_ref().expect("no error").revision)
            .collect();
        assert_eq!(revisions.len(), n);
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "in order, no repeat"
        );
        // What the ring kept decodes on demand, with its resourceVersion.
        let first = got[0].as_ref().unwrap().object().unwrap();
        assert_eq!(
            first["metadata"]["resourceVersion"],
            revisions[0].to_string()
        );
    }

    #[tokio::test]
    async fn a_watcher_behind_the_whole_ring_must_relist() {
        let dir = tempfile::tempdir().unwrap();
        let (store, hub) = hub(dir.path(), 100).await;
        let watch = hub.subscribe("/t/", hub.latest()).unwrap();
        create(&store, &hub, LIVE + 200).await;
        let got: Vec<_> = watch.collect().await;
        assert!(
            matches!(got.last(), Some(Err(WatchError::Expired))),
            "ends with Expired"
        );
        // And a new watch from where it started is too old.
        assert!(matches!(
            hub.subscribe("/t/", 0),
            Err(WatchError::TooOld { .. })
        ));
    }

    #[tokio::test]
    async fn an_update_carries_the_version_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (store, hub) = hub(dir.path(), 100).await;
        let mut watch = Box::pin(hub.subscribe("/t/", hub.latest()).unwrap());
        let a = store
            .create("/t/a", br#"{"metadata":{"labels":{"v":"1"}}}"#.to_vec())
            .await
            .unwrap();
        store
            .update(
                "/t/a",
                br#"{"metadata":{"labels":{"v":"2"}}}"#.to_vec(),
                a.mod_revision,
            )
            .await
            .unwrap();
        let _created = watch.next().await.unwrap().unwrap();
        let updated = watch.next().await.unwrap().unwrap();
        assert_eq!(updated.kind, "MODIFIED");
        assert_eq!(
            updated.previous_view().unwrap()["metadata"]["labels"]["v"],
            "1"
        );
        assert_eq!(updated.object().unwrap()["metadata"]["labels"]["v"], "2");
        // The ring's copy (what a writer starts from) has the same object.
        let latest = hub.latest_of("/t/a").unwrap();
        assert_eq!(latest.object().unwrap()["metadata"]["labels"]["v"], "2");
    }

    #[tokio::test]
    async fn selectors_read_a_view_without_managed_fields() {
        let dir = tempfile::tempdir().unwrap();
        let (store, hub) = hub(dir.path(), 100).await;
        let mut watch = Box::pin(hub.subscribe("/t/", hub.latest()).unwrap());
        let object = br#"{"metadata":{"name":"a","managedFields":[{"manager":"m"}]}}"#;
        store.create("/t/a", object.to_vec()).await.unwrap();
        let created = watch.next().await.unwrap().unwrap();
        let view = created.view().unwrap();
        assert_eq!(view["metadata"]["name"], "a");
        assert!(view["metadata"].get("managedFields").is_none());
        assert!(view["metadata"].get("resourceVersion").is_some());
        // What is sent and what a write starts from are whole.
        let sent: Value = serde_json::from_slice(&created.json().unwrap()).unwrap();
        assert_eq!(sent["metadata"]["managedFields"][0]["manager"], "m");
        let latest = hub.latest_of("/t/a").unwrap();
        assert_eq!(
            latest.object().unwrap()["metadata"]["managedFields"][0]["manager"],
            "m"
        );
    }
}
