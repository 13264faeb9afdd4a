//! The reflector: a local, read-only cache of the objects a watcher sees.
//!
//! [`store`] returns a reader ([`Store`], cheap to clone, shared by reconcilers and
//! trigger mappers) and a [`Writer`] fed by a watcher. A relist replaces the whole map
//! at once; the store is *ready* once the first list is in.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use tokio::sync::watch;

use super::watcher::Event;
use crds::Resource;

/// Identifies an object of one kind: namespace (for namespaced kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        ObjectRef {
            namespace: namespace.map(String::from),
            name: name.to_string(),
        }
    }

    pub fn of<K: Resource>(k: &K) -> Self {
        let m = k.metadata();
        ObjectRef {
            namespace: m.namespace.clone(),
            name: m.name.clone(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

type Map<K> = Arc<RwLock<HashMap<ObjectRef, Arc<K>>>>;

/// Read side of the cache.
pub struct Store<K> {
    map: Map<K>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            map: self.map.clone(),
            ready: self.ready.clone(),
        }
    }
}

/// Write side of the cache, owned by the reflector.
pub struct Writer<K> {
    map: Map<K>,
    ready: watch::Sender<bool>,
}

/// A new empty cache.
pub fn store<K>() -> (Store<K>, Writer<K>) {
    let map: Map<K> = Arc::default();
    let (tx, rx) = watch::channel(false);
    (
        Store {
            map: map.clone(),
            ready: rx,
        },
        Writer { map, ready: tx },
    )
}

impl<K: Resource> Store<K> {
    pub fn get(&self, key: &ObjectRef) -> Option<Arc<K>> {
        self.map.read().expect("store lock").get(key).cloned()
    }

    /// Every cached object.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.map
            .read()
            .expect("store lock")
            .values()
            .cloned()
            .collect()
    }

    /// Cached objects that satisfy `filter`.
    pub fn find(&self, filter: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.map
            .read()
            .expect("store lock")
            .values()
            .filter(|k| filter(k))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().expect("store lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Wait until the first list is in.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }
}

impl<K: Resource> Writer<K> {
    /// Apply an event; for a relist, returns the objects the relist dropped (deleted
    /// while the watch was away).
    pub fn apply(&mut self, event: &Event<K>) -> Vec<Arc<K>> {
        let mut map = self.map.write().expect("store lock");
        match event {
            Event::Applied(k) => {
                map.insert(ObjectRef::of(k), Arc::new(k.clone()));
                vec![]
            }
            Event::Deleted(k) => {
                map.remove(&ObjectRef::of(k));
                vec![]
            }
            Event::Restarted(all) => {
                let fresh: HashMap<_, _> = all
                    .iter()
                    .map(|k| (ObjectRef::of(k), Arc::new(k.clone())))
                    .collect();
                let old = std::mem::replace(&mut *map, fresh);
                self.ready.send_replace(true);
                old.into_iter()
                    .filter(|(key, _)| !map.contains_key(key))
                    .map(|(_, k)| k)
                    .collect()
            }
        }
    }
}

/// Apply every event of `stream` to `writer`, passing the events on. After a relist,
/// each object it dropped follows as a `Deleted` event, so consumers hear of deletions
/// that happened while the watch was away.
pub fn reflector<K: Resource, S, E>(
    mut writer: Writer<K>,
    stream: S,
) -> impl Stream<Item = Result<Event<K>, E>>
where
    S: Stream<Item = Result<Event<K>, E>>,
{
    stream.flat_map(move |event| {
        let dropped = match &event {
            Ok(e) => writer.apply(e),
            Err(_) => vec![],
        };
        let deletions = dropped
            .into_iter()
            .map(|k| Ok(Event::Deleted(k.as_ref().clone())));
        futures::stream::iter(std::iter::once(event).chain(deletions))
    })
}
