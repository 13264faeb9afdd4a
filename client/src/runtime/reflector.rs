//! The reflector: a local, read-only cache of the objects a watcher sees.
//!
//! [`store`] returns a reader ([`Store`], cheap to clone, shared by reconcilers and
//! trigger mappers) and a [`Writer`] fed by a watcher. A relist replaces the whole map
//! at once; the store is *ready* once the first list is in.
//!
//! A store can keep secondary indexes ([`Store::add_index`]): objects grouped by a key
//! derived from each (an Instance's Service, say), kept up to date by the writer, so a
//! reconciler asks for one group instead of scanning every cached object. An index is
//! named by an [`IndexName`] constant, and registering it is idempotent: every user of a
//! shared cache registers the indexes it reads.
//!
//! **No managed fields.** The [`reflector`] drops `metadata.managedFields` from every
//! object before it is cached or passed on, as client-go's informers do with
//! `TransformStripManagedFields`: no controller reads them, and decoded (a JSON value
//! per field set, a map per level) they were most of a cached Instance's memory, about
//! 10 KB of its 11 at the root during a burst of 10,000. Writing a cached object back
//! is unaffected: an update without managed fields keeps the stored ones (the server
//! records the write's own), as Kubernetes does.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use tokio::sync::watch;

use super::watcher::Change;
use crds::Resource;

/// Identifies an object of one kind: namespace (for namespaced kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The namespace (`None` for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
}

impl ObjectRef {
    /// The object `name` in `namespace`.
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        ObjectRef {
            namespace: namespace.map(String::from),
            name: name.to_string(),
        }
    }

    /// The reference of `k`.
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

/// The name of a secondary index of a cache: a constant of this type, not a string,
/// registers an index ([`Store::add_index`]) and reads it ([`Store::by_index`] and the
/// other group readers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IndexName(&'static str);

impl IndexName {
    /// The index called `name` (unique among the indexes of one kind's cache).
    pub const fn new(name: &'static str) -> Self {
        IndexName(name)
    }

    /// The name as text (for logs).
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for IndexName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The key an index files an object under (`None`: not in the index).
type KeyFn<K> = Box<dyn Fn(&K) -> Option<String> + Send + Sync>;

struct Index<K> {
    key: KeyFn<K>,
    /// The type of the key function (each function and closure expression has its own):
    /// what makes a second registration of the name the same definition.
    definition: TypeId,
    /// That type's name, for the message when a registration does not match.
    defined_by: &'static str,
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
    indexes: HashMap<IndexName, Index<K>>,
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
    /// The cached object `key`, if any.
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
    /// the writer.
    ///
    /// Idempotent per name, because a cache is shared by every user of its informer and
    /// each registers the indexes it reads: registering `name` again with the same key
    /// function (the same function, or the same closure expression; the values a
    /// closure captures are not compared) keeps the index there is.
    ///
    /// # Panics
    ///
    /// If `name` is already registered with a different key function: two meanings of
    /// one name on a shared cache are a bug, and this finds it when the second user
    /// starts.
    pub fn add_index<F>(&self, name: IndexName, key: F)
    where
        F: Fn(&K) -> Option<String> + Send + Sync + 'static,
    {
        let mut inner = self.map.write().expect("store lock");
        if let Some(existing) = inner.indexes.get(&name) {
            if existing.definition == TypeId::of::<F>() {
                return;
            }
            let defined_by = existing.defined_by;
            // Unlock first: a panic under the guard would poison the cache for its readers.
            drop(inner);
            panic!(
                "index {:?} of this {kind} cache is already defined by {defined_by}; {new} cannot redefine it (give it another name)",
                name.as_str(),
                kind = std::any::type_name::<K>(),
                new = std::any::type_name::<F>(),
            );
        }
        let mut index = Index {
            key: Box::new(key),
            definition: TypeId::of::<F>(),
            defined_by: std::any::type_name::<F>(),
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
        name: IndexName,
        mut f: impl FnMut(&str, u64, &mut dyn Iterator<Item = &Arc<K>>),
    ) {
        let inner = self.map.read().expect("store lock");
        if let Some(index) = inner.indexes.get(&name) {
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
    pub fn by_index(&self, name: IndexName, value: &str) -> Vec<Arc<K>> {
        let inner = self.map.read().expect("store lock");
        inner
            .indexes
            .get(&name)
            .and_then(|i| i.groups.get(value))
            .map(|g| g.members.values().cloned().collect())
            .unwrap_or_default()
    }

    /// How many cached objects index `name` files under `value`.
    pub fn group_len(&self, name: IndexName, value: &str) -> usize {
        let inner = self.map.read().expect("store lock");
        inner
            .indexes
            .get(&name)
            .and_then(|i| i.groups.get(value))
            .map_or(0, |g| g.members.len())
    }

    /// Call `f` with each cached object index `name` files under `value`, under one
    /// read of the cache and cloning nothing.
    pub fn for_each_in_group(&self, name: IndexName, value: &str, mut f: impl FnMut(&K)) {
        let inner = self.map.read().expect("store lock");
        if let Some(group) = inner.indexes.get(&name).and_then(|i| i.groups.get(value)) {
            group.members.values().for_each(|k| f(k));
        }
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.map.read().expect("store lock").objects.len()
    }

    /// Whether no object is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list is in (see [`wait_ready`](Self::wait_ready)).
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
    pub fn apply(&mut self, event: &Change<K>) -> Vec<Arc<K>> {
        let mut inner = self.map.write().expect("store lock");
        inner.generation += 1;
        match event {
            Change::Applied(k) => {
                inner.insert(ObjectRef::of(k), Arc::new(k.clone()));
                vec![]
            }
            Change::Deleted(k) => {
                inner.remove(&ObjectRef::of(k));
                vec![]
            }
            Change::Restarted(all) => {
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

/// Apply every event of `stream` to `writer`, passing the events on, each object
/// without its managed fields (see the module docs). After a relist, each object it
/// dropped follows as a `Deleted` event, so consumers hear of deletions that happened
/// while the watch was away.
pub fn reflector<K: Resource, S, E>(
    mut writer: Writer<K>,
    stream: S,
) -> impl Stream<Item = Result<Change<K>, E>>
where
    S: Stream<Item = Result<Change<K>, E>>,
{
    stream.flat_map(move |event| {
        let event = event.map(without_managed_fields);
        let dropped = match &event {
            Ok(e) => writer.apply(e),
            Err(_) => vec![],
        };
        let deletions = dropped
            .into_iter()
            .map(|k| Ok(Change::Deleted(k.as_ref().clone())));
        futures::stream::iter(std::iter::once(event).chain(deletions))
    })
}

/// `change` with every object's `metadata.managedFields` removed.
fn without_managed_fields<K: Resource>(change: Change<K>) -> Change<K> {
    fn strip<K: Resource>(mut k: K) -> K {
        k.metadata_mut().managed_fields = None;
        k
    }
    match change {
        Change::Applied(k) => Change::Applied(strip(k)),
        Change::Deleted(k) => Change::Deleted(strip(k)),
        Change::Restarted(all) => Change::Restarted(all.into_iter().map(strip).collect()),
    }
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

    const SERVICE: IndexName = IndexName::new("service");

    fn by_service(i: &Instance) -> Option<String> {
        Some(i.spec.service.clone())
    }

    fn names(v: Vec<Arc<Instance>>) -> Vec<String> {
        let mut n: Vec<String> = v.iter().map(|i| i.metadata.name.clone()).collect();
        n.sort();
        n
    }

    #[test]
    fn an_index_follows_applies_deletes_and_relists() {
        let (store, mut writer) = store::<Instance>();
        writer.apply(&Change::Applied(instance("a", "web")));
        // Added after the first object: built from what is cached.
        store.add_index(SERVICE, by_service);
        writer.apply(&Change::Applied(instance("b", "web")));
        writer.apply(&Change::Applied(instance("c", "db")));
        assert_eq!(names(store.by_index(SERVICE, "web")), ["a", "b"]);
        assert_eq!(names(store.by_index(SERVICE, "db")), ["c"]);
        let groups = |store: &Store<Instance>| {
            let mut groups: Vec<(String, u64, usize)> = Vec::new();
            store.for_each_group(SERVICE, |key, version, objects| {
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
                store.group_len(SERVICE, "web"),
                store.group_len(SERVICE, "x")
            ),
            (2, 0)
        );

        // A changed key moves the object; a deletion drops it.
        writer.apply(&Change::Applied(instance("b", "db")));
        assert_eq!(
            groups(&store),
            [
                ("db".to_string(), before + 1, 2),
                ("web".to_string(), before + 1, 1)
            ],
            "a move changes both groups"
        );
        writer.apply(&Change::Deleted(instance("c", "db")));
        assert_eq!(names(store.by_index(SERVICE, "web")), ["a"]);
        assert_eq!(names(store.by_index(SERVICE, "db")), ["b"]);
        let mut seen = Vec::new();
        store.for_each_in_group(SERVICE, "db", |i| seen.push(i.metadata.name.clone()));
        assert_eq!(seen, ["b"]);

        assert_eq!(
            store.generation(),
            before + 2,
            "each event bumps the generation"
        );
        // A relist rebuilds it.
        writer.apply(&Change::Restarted(vec![instance("d", "web")]));
        assert_eq!(names(store.by_index(SERVICE, "web")), ["d"]);
        assert!(store.by_index(SERVICE, "db").is_empty());
        assert!(store
            .by_index(IndexName::new("no-such-index"), "web")
            .is_empty());
    }

    /// Registers [`SERVICE`] with a closure that counts its calls in `calls` (the same
    /// closure expression, and so the same definition, at every call).
    fn index_counting(store: &Store<Instance>, calls: Arc<std::sync::atomic::AtomicUsize>) {
        store.add_index(SERVICE, move |i: &Instance| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(i.spec.service.clone())
        });
    }

    #[test]
    fn registering_an_index_again_keeps_the_first() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (store, mut writer) = store::<Instance>();
        writer.apply(&Change::Applied(instance("a", "web")));
        let (first, second) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        index_counting(&store, first.clone());
        index_counting(&store, second.clone());
        assert_eq!(
            (
                first.load(Ordering::Relaxed),
                second.load(Ordering::Relaxed)
            ),
            (1, 0),
            "the second registration neither rebuilt nor replaced the index"
        );
        writer.apply(&Change::Applied(instance("b", "web")));
        assert_eq!(
            second.load(Ordering::Relaxed),
            0,
            "the first key function files b"
        );
        assert_eq!(names(store.by_index(SERVICE, "web")), ["a", "b"]);
    }

    #[test]
    #[should_panic(expected = "index \"service\" of this")]
    fn registering_a_name_with_another_key_function_panics() {
        let (store, _writer) = store::<Instance>();
        store.add_index(SERVICE, by_service);
        store.add_index(SERVICE, |i: &Instance| i.spec.node.clone());
    }

    #[tokio::test]
    async fn the_reflector_caches_and_passes_on_objects_without_managed_fields() {
        let managed = |name: &str| {
            let mut i = instance(name, "web");
            i.metadata.managed_fields = Some(vec![serde_json::json!({"manager": "m"})]);
            i
        };
        let (store, writer) = store::<Instance>();
        let events = vec![
            Ok::<_, ()>(Change::Restarted(vec![managed("a")])),
            Ok(Change::Applied(managed("b"))),
        ];
        let passed: Vec<_> = reflector(writer, futures::stream::iter(events))
            .collect()
            .await;
        let objects = passed.iter().flat_map(|e| match e {
            Ok(Change::Restarted(all)) => all.clone(),
            Ok(Change::Applied(k) | Change::Deleted(k)) => vec![k.clone()],
            Err(()) => vec![],
        });
        assert!(objects
            .into_iter()
            .all(|k| k.metadata.managed_fields.is_none()));
        for cached in store.state() {
            assert_eq!(
                cached.metadata.managed_fields, None,
                "{}",
                cached.metadata.name
            );
        }
        assert_eq!(store.len(), 2);
    }
}
