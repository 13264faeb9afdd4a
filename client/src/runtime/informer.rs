//! Shared informers: one watch and one cache per kind (and namespace and selectors) per
//! [`Client`](crate::Client), however many controllers of the process need them. The
//! set of them is an [`Informers`], which every clone of a client holds.
//!
//! Every controller used to run its own watcher and reflector, so a process whose
//! scheduler, address allocator and sync loop all follow Instances received, decoded and
//! cached every Instance change three times. [`informer`] hands out the one
//! [`Informer`] for what is asked — started on first use, stopped (its watch task
//! aborted) when the last handle is dropped — and each user [`subscribes`] to its events
//! to queue its own keys.
//!
//! [`subscribes`]: Informer::subscribe

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;

use super::reflector::{self, Store};
use super::watcher::{watcher, Change};
use crate::{Api, ListParams};
use crds::Resource;

/// Called with every event after the cache applied it; returns whether it still wants
/// events (a controller that stopped returns `false` and is dropped).
type Subscriber<K> = Box<dyn Fn(&Change<K>) -> bool + Send + Sync>;

/// One watch of one kind feeding one cache, shared by its subscribers.
pub struct Informer<K: Resource> {
    store: Store<K>,
    subscribers: Arc<Mutex<Vec<Subscriber<K>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K: Resource> Informer<K> {
    /// The cache (ready once the first list is in).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Call `f` with every event from now on, after the cache has applied it, until `f`
    /// returns `false`. Events before the call are not replayed: the cache holds their
    /// result.
    pub fn subscribe(&self, f: impl Fn(&Change<K>) -> bool + Send + Sync + 'static) {
        self.subscribers
            .lock()
            .expect("subscribers lock")
            .push(Box::new(f));
    }
}

impl<K: Resource> Drop for Informer<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What makes two informers the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: TypeId,
    namespace: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
}

/// The shared informers of one client: a cheap handle that the [`Client`](crate::Client)
/// and all its clones hold, so that every controller built from them finds the same
/// informers. It holds them weakly: an informer lives while some user holds it.
#[derive(Clone, Default)]
pub struct Informers {
    live: Arc<Mutex<HashMap<Key, Weak<dyn Any + Send + Sync>>>>,
}

impl Informers {
    /// How many informers are running (each is one watch of the API server).
    pub fn len(&self) -> usize {
        let live = self.live.lock().expect("informers lock");
        live.values().filter(|w| w.strong_count() > 0).count()
    }

    /// Whether no informer is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Informers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informers")
            .field("live", &self.len())
            .finish()
    }
}

/// The informer of `api`'s objects that match `params` (selectors and namespace; the
/// other list parameters are the watcher's own), shared with every other user of the
/// same client (through its [`Informers`]). Must be called within a Tokio runtime.
pub fn informer<K: Resource>(api: Api<K>, params: ListParams) -> Arc<Informer<K>> {
    let key = Key {
        kind: TypeId::of::<K>(),
        namespace: api.namespace().map(String::from),
        label_selector: params.label_selector.clone(),
        field_selector: params.field_selector.clone(),
    };
    let registry = api.client().informers().clone();
    let mut informers = registry.live.lock().expect("informers lock");
    if let Some(shared) = informers
        .get(&key)
        .and_then(Weak::upgrade)
        .and_then(|any| any.downcast::<Informer<K>>().ok())
    {
        return shared;
    }
    informers.retain(|_, weak| weak.strong_count() > 0);
    let (store, writer) = reflector::store();
    let subscribers: Arc<Mutex<Vec<Subscriber<K>>>> = Arc::default();
    let task = tokio::spawn(drive(writer, api, params, subscribers.clone()));
    let informer = Arc::new(Informer {
        store,
        subscribers,
        task,
    });
    let erased: Arc<dyn Any + Send + Sync> = informer.clone();
    informers.insert(key, Arc::downgrade(&erased));
    informer
}

/// A cache of `api`'s objects matching `params` (the shared informer's), kept up to date
/// until `until` completes.
pub fn cache<K: Resource>(
    api: Api<K>,
    params: ListParams,
    until: impl Future<Output = ()> + Send + 'static,
) -> Store<K> {
    let informer = informer(api, params);
    let store = informer.store();
    tokio::spawn(async move {
        until.await;
        drop(informer);
    });
    store
}

/// Feed the cache from a watcher and pass each event to the subscribers.
async fn drive<K: Resource>(
    writer: reflector::Writer<K>,
    api: Api<K>,
    params: ListParams,
    subscribers: Arc<Mutex<Vec<Subscriber<K>>>>,
) {
    let events = reflector::reflector(writer, watcher(api, params));
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(e) => subscribers
                .lock()
                .expect("subscribers lock")
                .retain(|s| s(&e)),
            Err(e) => tracing::debug!(kind = K::KIND, error = %e, "watch interrupted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Client;
    use crds::Cluster;

    #[tokio::test]
    async fn a_client_shares_one_informer_per_kind_and_selectors_while_it_is_held() {
        // Nothing listens there: the watches only retry, which is all this test needs.
        let client = Client::new("http://127.0.0.1:9").unwrap();
        let all = || ListParams::default();
        let a = informer(client.api::<Cluster>(None), all());
        let b = informer(client.clone().api::<Cluster>(None), all());
        assert!(Arc::ptr_eq(&a, &b), "clones of a client share");
        let labelled = ListParams {
            label_selector: Some("x=y".into()),
            ..all()
        };
        let selected = informer(client.api::<Cluster>(None), labelled);
        assert!(
            !Arc::ptr_eq(&a, &selected),
            "another selector, another watch"
        );
        let other = Client::new("http://127.0.0.1:9").unwrap();
        let elsewhere = informer(other.api::<Cluster>(None), all());
        assert!(!Arc::ptr_eq(&a, &elsewhere), "another client, another set");
        assert_eq!((client.informers().len(), other.informers().len()), (2, 1));
        drop(a);
        assert_eq!(client.informers().len(), 2, "b still holds it");
        drop((b, selected));
        assert!(client.informers().is_empty());
    }
}
