//! The reflector: a local, read-only cache of the objects a watcher sees.
//!
//! [`store`] returns a reader ([`Store`], cheap to clone, shared by reconcilers and
//! trigger mappers) and a [`Writer`] fed by a watcher. A relist replaces the whole map
//! at once; the store is *ready* once the first list is in.
//!
//! A store can keep secondary indexes ([`Store::add_index`]): objects grouped by a key
//! derived from each (an Instance's Service, say), kept up to date by the writer, so a
//! reconciler asks for one group instead of scanning every cached object.

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

/// The key an index files an object under (`None`: not in the index).
type IndexKey<K> = Arc<dyn Fn(&K) -> Option<String> + Send + Sync>;

struct Index<K> {
    key: IndexKey<K>,
    groups: HashMap<String, Group<K>>,
}

struct Group<K> {
    /// The objects of the group (held here too: reading a group looks nothing up).
    members: HashMap<ObjectRef, Arc<K>>,
    /// The store's generation when an object last came, changed or went.
    version: u64,
}

impl<K> Index<K> {
    /// File `k` as of store generation `version`.
    fn insert(&mut self, r: &ObjectRef, k: &Arc<K>, version: u64) {
        if let Some(g) = (self.key)(k) {
            let group = self.groups.entry(g).or_insert_with(|| Group {
                members: HashMap::new(),
                version,
            });
            group.members.insert(r.clone(), k.clone());
            group.version = version;
        }
    }

    /// File every one of `objects` anew.
    fn rebuild(&mut self, objects: &HashMap<ObjectRef, Arc<K>>, version: u64) {
        self.groups.clear();
        for (r, k) in objects {
            self.insert(r, k, version);
        }
    }

    fn remove(&mut self, r: &ObjectRef, k: &K, version: u64) {
        if let Some(g) = (self.key)(k) {
            if let Some(group) = self.groups.get_mut(&g) {
                group.members.remove(r);
                group.version = version;
                if group.members.is_empty() {
                    self.groups.remove(&g);
                }
            }
        }
    }
}

struct Inner<K> {
    objects: HashMap<ObjectRef, Arc<K>>,
    indexes: HashMap<&'static str, Index<K>>,
    /// Bumped by every applied event.
    generation: u64,
}

impl<K> Default for Inner<K> {
    fn default() -> Self {
        Inner {
            objects: HashMap::new(),
            indexes: HashMap::new(),
            generation: 0,
        }
    }
}

impl<K> Inner<K> {
    fn insert(&mut self, r: ObjectRef, k: Arc<K>) {
        let old = self.objects.insert(r.clone(), k.clone());
        for index in self.indexes.values_mut() {
            if let Some(old) = &old {
                index.remove(&r, old, self.generation);
            }
            index.insert(&r, &k, self.generation);
        }
    }

    fn remove(&mut self, r: &ObjectRef) -> Option<Arc<K>> {
        let old = self.objects.remove(r)?;
        for index in self.indexes.values_mut() {
            index.remove(r, &old, self.generation);
        }
        Some(old)
    }
}

type Map<K> = Arc<RwLock<Inner<K>>>;

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
        self.map
            .read()
            .expect("store lock")
            .objects
            .get(key)
            .cloned()
    }

    /// Every cached object.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.map
            .read()
            .expect("store lock")
            .objects
            .values()
            .cloned()
            .collect()
    }

    /// Cached objects that satisfy `filter`.
    pub fn find(&self, filter: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.map
            .read()
            .expect("store lock")
            .objects
            .values()
            .filter(|k| filter(k))
            .cloned()
            .collect()
    }

    /// Keep index `name`: every object filed under `key(object)` (objects for which it
    /// is `None` are left out). Built from what is cached now and kept up to date by
    /// the writer; adding a name again replaces that index.
    pub fn add_index(
        &self,
        name: &'static str,
        key: impl Fn(&K) -> Option<String> + Send + Sync + 'static,
    ) {
        let mut inner = self.map.write().expect("store lock");
        let mut index = Index {
            key: Arc::new(key),
            groups: HashMap::new(),
        };
        index.rebuild(&inner.objects, inner.generation);
        inner.indexes.insert(name, index);
    }

    /// Call `f` with each group of index `name` (its key, version and objects), under
    /// one read of the cache: for a caller that wants most groups, cheaper than asking
    /// for each. A group's version is the cache's [`generation`](Self::generation)
    /// when one of its objects last came, changed or went: a caller that keeps
    /// something derived from a group need not read the group again while its version
    /// stays the same.
    pub fn for_each_group(
        &self,
        name: &str,
        mut f: impl FnMut(&str, u64, &mut dyn Iterator<Item = &Arc<K>>),
    ) {
        let inner = self.map.read().expect("store lock");
        if let Some(index) = inner.indexes.get(name) {
            for (key, group) in &index.groups {
                f(key, group.version, &mut group.members.values());
            }
        }
    }

    /// A number that changes whenever the cache does (every applied event bumps it):
    /// lets a reader keep something derived from the whole cache until it is stale.
    pub fn generation(&self) -> u64 {
        self.map.read().expect("store lock").generation
    }

    /// The cached objects index `name` files under `value` (none if there is no such
    /// index).
    pub fn by_index(&self, name: &str, value: &str) -> Vec<Arc<K>> {
        let inner = self.map.read().expect("store lock");
        inner
            .indexes
            .get(name)
            .and_then(|i| i.groups.get(value))
            .map(|g| g.members.values().cloned().collect())
            .unwrap_or_default()
    }

    /// How many cached objects index `name` files under `value`.
    pub fn group_len(&self, name: &str, value: &str) -> usize {
        let inner = self.map.read().expect("store lock");
        inner
            .indexes
            .get(name)
            .and_then(|i| i.groups.get(value))
            .map_or(0, |g| g.members.len())
    }

    /// Call `f` with each cached object index `name` files under `value`, under one
    /// read of the cache and cloning nothing.
    pub fn for_each_in_group(&self, name: &str, value: &str, mut f: impl FnMut(&K)) {
        let inner = self.map.read().expect("store lock");
        if let Some(group) = inner.indexes.get(name).and_then(|i| i.groups.get(value)) {
            group.members.values().for_each(|k| f(k));
        }
    }

    pub fn len(&self) -> usize {
        self.map.read().expect("store lock").objects.len()
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
        let mut inner = self.map.write().expect("store lock");
        inner.generation += 1;
        match event {
            Event::Applied(k) => {
                inner.insert(ObjectRef::of(k), Arc::new(k.clone()));
                vec![]
            }
            Event::Deleted(k) => {
                inner.remove(&ObjectRef::of(k));
                vec![]
            }
            Event::Restarted(all) => {
                let fresh: HashMap<_, _> = all
                    .iter()
                    .map(|k| (ObjectRef::of(k), Arc::new(k.clone())))
                    .collect();
                let old = std::mem::replace(&mut inner.objects, fresh);
                let Inner {
                    objects,
                    indexes,
                    generation,
                } = &mut *inner;
                for index in indexes.values_mut() {
                    index.rebuild(objects, *generation);
                }
                self.ready.send_replace(true);
                old.into_iter()
                    .filter(|(key, _)| !inner.objects.contains_key(key))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{Instance, InstanceSpec, Workload};

    fn instance(name: &str, service: &str) -> Instance {
        let mut i = Instance::new(
            name,
            InstanceSpec {
                service: service.into(),
                ordinal: 0,
                template: Workload::default(),
                cluster: None,
                node: None,
            },
        );
        i.metadata.namespace = Some("default".into());
        i
    }

    fn names(v: Vec<Arc<Instance>>) -> Vec<String> {
        let mut n: Vec<String> = v.iter().map(|i| i.metadata.name.clone()).collect();
        n.sort();
        n
    }

    #[test]
    fn an_index_follows_applies_deletes_and_relists() {
        let (store, mut writer) = store::<Instance>();
        writer.apply(&Event::Applied(instance("a", "web")));
        // Added after the first object: built from what is cached.
        store.add_index("service", |i: &Instance| Some(i.spec.service.clone()));
        writer.apply(&Event::Applied(instance("b", "web")));
        writer.apply(&Event::Applied(instance("c", "db")));
        assert_eq!(names(store.by_index("service", "web")), ["a", "b"]);
        assert_eq!(names(store.by_index("service", "db")), ["c"]);
        let groups = |store: &Store<Instance>| {
            let mut groups: Vec<(String, u64, usize)> = Vec::new();
            store.for_each_group("service", |key, version, objects| {
                groups.push((key.to_string(), version, objects.count()))
            });
            groups.sort();
            groups
        };
        let before = store.generation();
        assert_eq!(
            groups(&store),
            [
                ("db".to_string(), before, 1),
                ("web".to_string(), before - 1, 2)
            ],
            "a group's version is the generation of its last change"
        );
        assert_eq!(
            (
                store.group_len("service", "web"),
                store.group_len("service", "x")
            ),
            (2, 0)
        );

        // A changed key moves the object; a deletion drops it.
        writer.apply(&Event::Applied(instance("b", "db")));
        assert_eq!(
            groups(&store),
            [
                ("db".to_string(), before + 1, 2),
                ("web".to_string(), before + 1, 1)
            ],
            "a move changes both groups"
        );
        writer.apply(&Event::Deleted(instance("c", "db")));
        assert_eq!(names(store.by_index("service", "web")), ["a"]);
        assert_eq!(names(store.by_index("service", "db")), ["b"]);
        let mut seen = Vec::new();
        store.for_each_in_group("service", "db", |i| seen.push(i.metadata.name.clone()));
        assert_eq!(seen, ["b"]);

        assert_eq!(
            store.generation(),
            before + 2,
            "each event bumps the generation"
        );
        // A relist rebuilds it.
        writer.apply(&Event::Restarted(vec![instance("d", "web")]));
        assert_eq!(names(store.by_index("service", "web")), ["d"]);
        assert!(store.by_index("service", "db").is_empty());
        assert!(store.by_index("no-such-index", "web").is_empty());
    }
}
