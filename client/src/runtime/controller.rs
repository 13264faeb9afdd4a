//! The controller loop: a work queue of object keys fed by watches, run by a bounded
//! number of reconcilers.
//!
//! Guarantees: a key queued many times is reconciled once; one key is never reconciled
//! twice at once (a trigger during a reconcile runs it again afterwards); at most
//! `concurrency` reconciles run; a failed reconcile is retried with per-key exponential
//! backoff decided by the error policy; [`Action::requeue`] schedules the next run;
//! reconciles start only after every cache has its first list; shutdown lets running
//! reconciles finish.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::informer::informer;
use super::reflector::{ObjectRef, Store};
use super::watcher::{Backoff, Event};
use crate::{Api, ListParams};
use crds::Resource;

/// What to do after a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `d` even if nothing changes.
    pub fn requeue(d: Duration) -> Self {
        Action {
            requeue_after: Some(d),
        }
    }
    /// Reconcile again only when a watched object changes.
    pub fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }
}

/// The error of a reconcile. A conflict (a write at a stale resourceVersion) is an
/// expected race, retried quietly; anything else is logged as a warning.
pub trait ReconcileError: std::fmt::Display + Send + 'static {
    fn is_conflict(&self) -> bool {
        false
    }
}

impl ReconcileError for std::convert::Infallible {}

impl ReconcileError for crate::ClientError {
    fn is_conflict(&self) -> bool {
        crate::ClientError::is_conflict(self)
    }
}

/// A failed reconcile is retried with per-key exponential backoff between these bounds.
const ERROR_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(60));

type Trigger = mpsc::UnboundedSender<ObjectRef>;

/// Builds and runs a controller for objects of kind `K`.
pub struct Controller<K: Resource> {
    store: Store<K>,
    trigger_tx: Trigger,
    trigger_rx: mpsc::UnboundedReceiver<ObjectRef>,
    readiness: Vec<Box<dyn Fn() -> bool + Send + Sync>>,
    /// The informers this controller follows, kept alive while it runs.
    informers: Vec<Arc<dyn std::any::Any + Send + Sync>>,
    concurrency: usize,
    debounce: Duration,
    name: String,
}

impl<K: Resource> Controller<K> {
    /// Reconcile every object of `api` that matches `params`.
    pub fn new(api: Api<K>, params: ListParams) -> Self {
        let (trigger_tx, trigger_rx) = mpsc::unbounded_channel();
        let (store, main) = follow(api, params, trigger_tx.clone(), |k: &K| {
            vec![ObjectRef::of(k)]
        });
        let readiness_store = store.clone();
        Controller {
            store,
            trigger_tx,
            trigger_rx,
            readiness: vec![Box::new(move || readiness_store.is_ready())],
            informers: vec![main],
            concurrency: 4,
            debounce: Duration::ZERO,
            name: K::KIND.to_lowercase(),
        }
    }

    /// The cache of the reconciled kind.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Start each key at most once per `d`: a key triggered after a quiet period is
    /// queued at once; triggers within `d` of its last start are merged into one run
    /// at the end of that period. For a controller that many changes trigger in a
    /// burst (a Service with thousands of Instances), one reconcile per period then
    /// covers them all, and a lone change waits for nothing.
    pub fn debounce(mut self, d: Duration) -> Self {
        self.debounce = d;
        self
    }

    /// Name used in logs.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Also watch objects of kind `R`; every change of one queues the keys `mapper`
    /// returns. The returned store is the cache of `R`, for reconcilers and mappers.
    pub fn watches<R: Resource>(
        &mut self,
        api: Api<R>,
        params: ListParams,
        mapper: impl Fn(&R) -> Vec<ObjectRef> + Send + Sync + 'static,
    ) -> Store<R> {
        let (store, informer) = follow(api, params, self.trigger_tx.clone(), mapper);
        self.informers.push(informer);
        let ready = store.clone();
        self.readiness.push(Box::new(move || ready.is_ready()));
        store
    }

    /// A handle that queues keys from elsewhere (e.g. a periodic resync).
    pub fn trigger(&self) -> impl Fn(ObjectRef) + Send + Sync + 'static {
        let tx = self.trigger_tx.clone();
        move |key| {
            let _ = tx.send(key);
        }
    }

    /// Run until `shutdown` completes. `reconcile` gets the cached object (keys whose
    /// object is gone are skipped); its error goes to the log and the key is retried
    /// with backoff.
    pub async fn run<F, Fut, E>(self, reconcile: F, shutdown: impl Future<Output = ()> + Send)
    where
        F: Fn(Arc<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: ReconcileError,
    {
        let reconcile = Arc::new(reconcile);
        self.run_keyed(
            move |_key, object| {
                let reconcile = reconcile.clone();
                async move {
                    match object {
                        Some(o) => reconcile(o).await,
                        None => Ok(Action::await_change()),
                    }
                }
            },
            shutdown,
        )
        .await
    }

    /// Like [`run`](Self::run), but every queued key is reconciled, with `None` when its
    /// object is not (or no longer) in the cache: for controllers that clean up after
    /// deleted objects or create objects that do not exist yet.
    pub async fn run_keyed<F, Fut, E>(
        mut self,
        reconcile: F,
        shutdown: impl Future<Output = ()> + Send,
    ) where
        F: Fn(ObjectRef, Option<Arc<K>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: ReconcileError,
    {
        let reconcile = Arc::new(reconcile);
        tokio::pin!(shutdown);
        // Reconciles start once every cache has its first list.
        while !self.readiness.iter().all(|r| r()) {
            tokio::select! {
                _ = &mut shutdown => return self.stop(),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        tracing::info!(controller = %self.name, objects = self.store.len(), "caches ready, reconciling");
        let mut queue = Queue::default();
        let (done_tx, mut done_rx) =
            mpsc::unbounded_channel::<(ObjectRef, Result<Action, (bool, String)>)>();
        let mut backoffs: HashMap<ObjectRef, Backoff> = HashMap::new();
        let mut debouncer = Debouncer::new(self.debounce);
        let (due_tx, mut due_rx) = mpsc::unbounded_channel::<ObjectRef>();
        for k in self.store.state() {
            queue.push(ObjectRef::of(k.as_ref()));
        }
        loop {
            while queue.running.len() < self.concurrency {
                let Some(key) = queue.pop() else { break };
                let object = self.store.get(&key);
                let reconcile = reconcile.clone();
                let done = done_tx.clone();
                let span =
                    tracing::debug_span!("reconcile", controller = %self.name, object = %key);
                tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        let result = reconcile(key.clone(), object)
                            .await
                            .map_err(|e| (e.is_conflict(), e.to_string()));
                        let _ = done.send((key, result));
                    },
                    span,
                ));
            }
            tokio::select! {
                _ = &mut shutdown => break,
                Some(key) = self.trigger_rx.recv() => {
                    match debouncer.trigger(&key, Instant::now()) {
                        Admit::Now => queue.push(key),
                        Admit::After(wait) => {
                            let due = due_tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(wait).await;
                                let _ = due.send(key);
                            });
                        }
                        Admit::Merged => {}
                    }
                }
                Some(key) = due_rx.recv() => {
                    debouncer.due(&key, Instant::now());
                    queue.push(key);
                }
                Some((key, result)) = done_rx.recv() => {
                    let delay = match result {
                        Ok(action) => {
                            backoffs.remove(&key);
                            action.requeue_after
                        }
                        Err(e) => {
                            let delay = backoffs
                                .entry(key.clone())
                                .or_insert_with(|| Backoff::new(ERROR_BACKOFF.0, ERROR_BACKOFF.1))
                                .next_delay();
                            let (conflict, e) = e;
                            if conflict {
                                // Optimistic concurrency at work: retried on fresh data.
                                tracing::debug!(controller = %self.name, object = %key, error = %e, "reconcile lost a write race; retrying");
                            } else {
                                tracing::warn!(controller = %self.name, object = %key, error = %e, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
                            }
                            Some(delay)
                        }
                    };
                    queue.finish(&key);
                    if let Some(delay) = delay {
                        let tx = self.trigger_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(key);
                        });
                    }
                }
            }
        }
        // Let running reconciles finish.
        while !queue.running.is_empty() {
            match done_rx.recv().await {
                Some((key, _)) => queue.finish(&key),
                None => break,
            }
        }
        self.stop();
    }

    /// Dropping the controller drops its hold on the informers (the last holder's
    /// drop stops a watch) and closes its trigger channel (its subscriptions end).
    fn stop(self) {
        tracing::info!(controller = %self.name, "stopped");
    }
}

/// Subscribe to the shared informer of `api` and `params`: each event queues the keys
/// `mapper` gives for its object(s). Returns the informer's cache and a hold on it.
fn follow<R: Resource>(
    api: Api<R>,
    params: ListParams,
    trigger: Trigger,
    mapper: impl Fn(&R) -> Vec<ObjectRef> + Send + Sync + 'static,
) -> (Store<R>, Arc<dyn std::any::Any + Send + Sync>) {
    let informer = informer(api, params);
    informer.subscribe(move |event: &Event<R>| {
        let keys = match event {
            Event::Applied(r) | Event::Deleted(r) => mapper(r),
            Event::Restarted(all) => all.iter().flat_map(&mapper).collect(),
        };
        for key in keys {
            let _ = trigger.send(key);
        }
        // A stopped controller has dropped its receiver: unsubscribe.
        !trigger.is_closed()
    });
    (informer.store(), informer)
}

/// The per-key rate limit of [`Controller::debounce`].
struct Debouncer {
    period: Duration,
    /// When each key was last let through; entries older than `period` are dropped
    /// when the map has doubled since the last such sweep.
    last: HashMap<ObjectRef, Instant>,
    sweep_at: usize,
    /// Keys with a run due at the end of their period.
    held: HashSet<ObjectRef>,
}

/// What [`Debouncer::trigger`] decided for a key.
#[derive(Debug, PartialEq)]
enum Admit {
    /// Queue it now.
    Now,
    /// Queue it after this long (then call [`Debouncer::due`]).
    After(Duration),
    /// A run is already due; this trigger is merged into it.
    Merged,
}

impl Debouncer {
    const FIRST_SWEEP: usize = 1024;

    fn new(period: Duration) -> Self {
        Debouncer {
            period,
            last: HashMap::new(),
            sweep_at: Self::FIRST_SWEEP,
            held: HashSet::new(),
        }
    }

    fn trigger(&mut self, key: &ObjectRef, now: Instant) -> Admit {
        if self.period.is_zero() {
            return Admit::Now;
        }
        if self.held.contains(key) {
            return Admit::Merged;
        }
        let since = self
            .last
            .get(key)
            .map(|t| now.saturating_duration_since(*t));
        match since {
            Some(since) if since < self.period => {
                self.held.insert(key.clone());
                Admit::After(self.period - since)
            }
            _ => {
                self.let_through(key, now);
                Admit::Now
            }
        }
    }

    /// The period of a held key ended: it is queued now.
    fn due(&mut self, key: &ObjectRef, now: Instant) {
        self.held.remove(key);
        self.let_through(key, now);
    }

    fn let_through(&mut self, key: &ObjectRef, now: Instant) {
        self.last.insert(key.clone(), now);
        if self.last.len() >= self.sweep_at {
            let period = self.period;
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < period);
            self.sweep_at = (2 * self.last.len()).max(Self::FIRST_SWEEP);
        }
    }
}

/// Keys waiting, running, and to run again after their current run.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<ObjectRef>,
    queued: HashSet<ObjectRef>,
    running: HashSet<ObjectRef>,
    again: HashSet<ObjectRef>,
}

impl Queue {
    fn push(&mut self, key: ObjectRef) {
        if self.running.contains(&key) {
            self.again.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.waiting.push_back(key);
        }
    }

    fn pop(&mut self) -> Option<ObjectRef> {
        let key = self.waiting.pop_front()?;
        self.queued.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    fn finish(&mut self, key: &ObjectRef) {
        self.running.remove(key);
        if self.again.remove(key) {
            self.push(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debouncer_lets_a_lone_trigger_through_and_merges_a_burst() {
        let period = Duration::from_millis(100);
        let mut d = Debouncer::new(period);
        let (a, b) = (ObjectRef::new(None, "a"), ObjectRef::new(None, "b"));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(d.trigger(&a, t0), Admit::Now, "a quiet key runs at once");
        assert_eq!(d.trigger(&b, at(10)), Admit::Now, "keys are limited apart");
        assert_eq!(
            d.trigger(&a, at(30)),
            Admit::After(Duration::from_millis(70)),
            "within the period: held until it ends"
        );
        assert_eq!(d.trigger(&a, at(60)), Admit::Merged);
        d.due(&a, at(100));
        assert_eq!(
            d.trigger(&a, at(150)),
            Admit::After(Duration::from_millis(50)),
            "the held run started a new period"
        );
        d.due(&a, at(200));
        assert_eq!(d.trigger(&a, at(350)), Admit::Now, "quiet again");
        let mut off = Debouncer::new(Duration::ZERO);
        assert_eq!(off.trigger(&a, t0), Admit::Now);
        assert_eq!(off.trigger(&a, t0), Admit::Now);
    }

    #[test]
    fn debouncer_forgets_keys_whose_period_is_over() {
        let mut d = Debouncer::new(Duration::from_millis(100));
        let t0 = Instant::now();
        for i in 0..Debouncer::FIRST_SWEEP * 3 {
            let key = ObjectRef::new(None, &format!("k{i}"));
            assert_eq!(
                d.trigger(&key, t0 + Duration::from_secs(i as u64)),
                Admit::Now
            );
        }
        assert!(
            d.last.len() < Debouncer::FIRST_SWEEP + 1,
            "{} keys remembered",
            d.last.len()
        );
    }

    #[test]
    fn queue_merges_duplicates_and_never_runs_a_key_twice() {
        let mut q = Queue::default();
        let a = ObjectRef::new(None, "a");
        let b = ObjectRef::new(None, "b");
        q.push(a.clone());
        q.push(a.clone());
        q.push(b.clone());
        assert_eq!(q.pop(), Some(a.clone()));
        q.push(a.clone()); // while running: deferred
        assert_eq!(q.pop(), Some(b.clone()));
        assert_eq!(q.pop(), None, "a is running, so it is not handed out again");
        q.finish(&a);
        assert_eq!(
            q.pop(),
            Some(a.clone()),
            "the trigger during the run queues it once more"
        );
        q.finish(&a);
        q.finish(&b);
        assert_eq!(q.pop(), None);
    }
}
