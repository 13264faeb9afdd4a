//! The shared watch fan-out.
//!
//! One storage watch over every key feeds a bounded ring of recent events and a
//! broadcast channel; each HTTP watcher subscribes to it, replays the ring after its
//! resourceVersion and follows the broadcast. Each event's JSON is encoded once, not
//! once per watcher. A watcher that asks for a version older than the ring, or that
//! falls too far behind, gets "too old" (410) and relists, as Kubernetes clients do.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::broadcast;

use crate::object;
use crate::storage::{Storage, StorageError, WatchEvent};

/// A change, decoded once for every watcher.
#[derive(Debug)]
pub struct Change {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object's storage key.
    pub key: String,
    /// The storage revision of the change.
    pub revision: i64,
    /// The object with `metadata.resourceVersion` set.
    pub object: Arc<serde_json::Value>,
    /// `object` serialized.
    pub json: bytes::Bytes,
    /// For `MODIFIED`: the object before the change (to tell selector transitions).
    pub previous: Option<Arc<serde_json::Value>>,
}

impl Change {
    /// The change `event` makes; `known` is the hub's last change of the same key, whose
    /// object is the previous version when their revisions match (then it is shared,
    /// not decoded again).
    fn from_event(event: &WatchEvent, known: Option<&Change>) -> Option<Change> {
        let kind = match event {
            WatchEvent::Created(_) => "ADDED",
            WatchEvent::Updated { .. } => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
        };
        let kv = event.kv();
        let object = Arc::new(object::decode(kv).ok()?);
        let json = serde_json::to_vec(&*object).ok()?.into();
        let previous = match (event, known) {
            (WatchEvent::Updated { prev: Some(p), .. }, Some(known))
                if known.revision == p.mod_revision && known.kind != "DELETED" =>
            {
                Some(known.object.clone())
            }
            (WatchEvent::Updated { prev: Some(p), .. }, _) => object::decode(p).ok().map(Arc::new),
            _ => None,
        };
        Some(Change {
            kind,
            key: kv.key.clone(),
            revision: kv.mod_revision,
            object,
            json,
            previous,
        })
    }
}

#[derive(Clone, Debug)]
enum Message {
    Change(Arc<Change>),
    /// The hub lost continuity with storage; every watcher must relist.
    Reset,
}

struct Ring {
    changes: VecDeque<Arc<Change>>,
    /// The latest change of each key that has one in `changes`.
    by_key: HashMap<String, Arc<Change>>,
    capacity: usize,
    /// Every change after this revision is in `changes`.
    complete_after: i64,
    latest: i64,
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
    /// The watcher fell behind the hub, or the hub lost its storage watch.
    #[error("the watch fell behind or the server lost its storage watch; list again")]
    Expired,
}

impl WatchHub {
    /// Start following `store` from its current revision; `capacity` recent changes are
    /// kept for watchers that start slightly in the past.
    pub async fn start(store: Arc<dyn Storage>, capacity: usize) -> Result<WatchHub, StorageError> {
        let latest = store.revision().await?;
        let (live, _) = broadcast::channel(capacity.max(1024));
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
        self.known(key).filter(|c| c.kind != "DELETED")
    }

    /// The hub's last change of `key`, deleted or not.
    fn known(&self, key: &str) -> Option<Arc<Change>> {
        self.ring
            .lock()
            .expect("ring lock")
            .by_key
            .get(key)
            .cloned()
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
                        let known = self.known(&event.kv().key);
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
                    .is_some_and(|c| Arc::ptr_eq(c, &old))
                {
                    ring.by_key.remove(&old.key);
                }
            }
        }
        ring.by_key.insert(change.key.clone(), change.clone());
        ring.changes.push_back(change.clone());
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

    /// Changes of keys under `prefix` after revision `after`.
    pub fn subscribe(
        &self,
        prefix: &str,
        after: i64,
    ) -> Result<impl Stream<Item = Result<Arc<Change>, WatchError>> + Send + 'static, WatchError>
    {
        let (backlog, rx, floor) = {
            let ring = self.ring.lock().expect("ring lock");
            if after < ring.complete_after {
                return Err(WatchError::TooOld {
                    requested: after,
                    oldest: ring.complete_after,
                });
            }
            let backlog: Vec<_> = ring
                .changes
                .iter()
                .filter(|c| c.revision > after && c.key.starts_with(prefix))
                .cloned()
                .collect();
            (backlog, self.live.subscribe(), after.max(ring.latest))
        };
        let guard = WatcherGuard::new(self.watchers.clone());
        let prefix = prefix.to_string();
        let live = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |m| {
            let out = match m {
                Ok(Message::Change(c))
                    if c.revision > floor && c.key.starts_with(prefix.as_str()) =>
                {
                    Some(Ok(c))
                }
                Ok(Message::Change(_)) => None,
                Ok(Message::Reset) | Err(_) => Some(Err(WatchError::Expired)),
            };
            futures::future::ready(out)
        });
        let mut ended = false;
        Ok(futures::stream::iter(backlog.into_iter().map(Ok))
            .chain(live)
            .take_while(move |r| {
                let _keep_alive = &guard;
                let go = !ended;
                ended = r.is_err();
                futures::future::ready(go)
            }))
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
