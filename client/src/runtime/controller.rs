//! The controller loop: a work queue of object keys fed by watches, run by a bounded
//! number of reconcilers.
//!
//! What the runner does:
//! - Reconciles start once every cache the controller follows has its first list.
//! - A key queued many times is reconciled once; one key is never reconciled twice at
//!   once (a trigger during a reconcile runs it again afterwards); at most
//!   `concurrency` reconciles run at a time.
//! - After a reconcile that succeeded, [`Action::requeue`] runs the key again after the
//!   given time; [`Action::await_change`] waits for a watched object to change.
//! - After a reconcile that failed, the error's [`ReconcileError::on_error`] decides:
//!   [`OnError::Retry`] logs a warning and runs the key again after its backoff (100 ms
//!   after the first failure, doubling with each failure in a row up to 60 s, each
//!   ±50% jitter; a success starts over); [`OnError::RetryQuietly`] does the same with
//!   a debug log (by default, for a conflict: a write at a stale resourceVersion, which
//!   a fresh read resolves); [`OnError::GiveUp`] logs at error level and does not
//!   requeue, so the key runs again only when a watched object changes or something
//!   triggers it. The runner records no Event: a reconcile that records Events records
//!   its own failures.
//! - Every timed run (requeue, retry, and the end of a [`Controller::debounce`] period)
//!   waits in one delay queue. A key has at most one timed run: a new requeue or retry
//!   replaces the pending one; a reconcile that awaits change leaves it as it is.
//! - Shutdown lets running reconciles finish.
//!
//! Time is Tokio's ([`tokio::time::Instant`]), so tests run the runner on paused time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::{delay_queue, DelayQueue};

use super::backoff::Backoff;
use super::informer::informer;
use super::reflector::{ObjectRef, Store};
use super::watcher::Change;
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

/// What the runner does after a failed reconcile (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Run the key again after its backoff; log a warning.
    Retry,
    /// Run the key again after its backoff; log at debug level. For expected races,
    /// such as a write at a stale resourceVersion.
    RetryQuietly,
    /// Do not run the key again until a watched object changes or a trigger queues it;
    /// log at error level. For failures that retrying cannot cure.
    GiveUp,
}

/// The error of a reconcile, and the error policy of the runner: each error says
/// whether it is retried ([`OnError`]).
pub trait ReconcileError: std::fmt::Display + Send + 'static {
    /// What the runner does after this error. By default a conflict is retried quietly
    /// and anything else retried with a warning; an error type overrides this to give
    /// up on errors that retrying cannot cure.
    fn on_error(&self) -> OnError {
        if self.is_conflict() {
            OnError::RetryQuietly
        } else {
            OnError::Retry
        }
    }

    /// Whether this is a conflict: a write at a stale resourceVersion (optimistic
    /// concurrency at work), which the default [`on_error`](Self::on_error) retries
    /// quietly.
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
    /// One future per followed cache, done once it has its first list.
    readiness: Vec<BoxFuture<'static, ()>>,
    /// The informers this controller follows, kept alive while it runs.
    informers: Vec<Arc<dyn std::any::Any + Send + Sync>>,
    concurrency: usize,
    debounce: Duration,
    /// The backoff each failing key starts from (a fresh copy per key).
    retry: Backoff,
    name: String,
}

/// A future done once `store` has its first list.
fn ready<K: Resource>(store: &Store<K>) -> BoxFuture<'static, ()> {
    let store = store.clone();
    Box::pin(async move { store.wait_ready().await })
}

impl<K: Resource> Controller<K> {
    /// Reconcile every object of `api` that matches `params`.
    pub fn new(api: Api<K>, params: ListParams) -> Self {
        let (trigger_tx, trigger_rx) = mpsc::unbounded_channel();
        let (store, main) = follow(api, params, trigger_tx.clone(), |k: &K| {
            vec![ObjectRef::of(k)]
        });
        let mut controller = Controller::on(store, trigger_tx, trigger_rx);
        controller.informers.push(main);
        controller
    }

    /// A controller of the objects in `store`, queued through `trigger_tx`.
    fn on(
        store: Store<K>,
        trigger_tx: Trigger,
        trigger_rx: mpsc::UnboundedReceiver<ObjectRef>,
    ) -> Self {
        Controller {
            readiness: vec![ready(&store)],
            store,
            trigger_tx,
            trigger_rx,
            informers: Vec::new(),
            concurrency: 4,
            debounce: Duration::ZERO,
            retry: Backoff::new(ERROR_BACKOFF.0, ERROR_BACKOFF.1),
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

    /// Run at most `n` reconciles at a time (at least one; four by default).
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
        self.readiness.push(ready(&store));
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
    /// object is gone are skipped); what follows an error is the error's
    /// [`ReconcileError::on_error`] (see the module docs).
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
        let ready = futures::future::join_all(std::mem::take(&mut self.readiness));
        tokio::select! {
            _ = &mut shutdown => return self.stop(),
            _ = ready => {}
        }
        tracing::info!(controller = %self.name, objects = self.store.len(), "caches ready, reconciling");
        let mut queue = Queue::default();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(ObjectRef, Result<Action, E>)>();
        let mut backoffs: HashMap<ObjectRef, Backoff> = HashMap::new();
        let mut debouncer = Debouncer::new(self.debounce);
        let mut timers = Timers::default();
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
                        let result = reconcile(key.clone(), object).await;
                        let _ = done.send((key, result));
                    },
                    span,
                ));
            }
            tokio::select! {
                _ = &mut shutdown => break,
                Some(key) = self.trigger_rx.recv() => {
                    admit(key, &mut debouncer, &mut queue, &mut timers);
                }
                Some(timer) = timers.next() => match timer {
                    Timer::Requeue(key) => admit(key, &mut debouncer, &mut queue, &mut timers),
                    Timer::Debounced(key) => {
                        debouncer.due(&key, Instant::now());
                        queue.push(key);
                    }
                },
                Some((key, result)) = done_rx.recv() => {
                    queue.finish(&key);
                    let delay = match result {
                        Ok(action) => {
                            backoffs.remove(&key);
                            action.requeue_after
                        }
                        Err(e) => self.failed(&key, &e, &mut backoffs),
                    };
                    if let Some(delay) = delay {
                        timers.requeue(key, delay);
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

    /// Log a failed reconcile of `key` as its error's policy says; the delay until it is
    /// retried, if it is.
    fn failed<E: ReconcileError>(
        &self,
        key: &ObjectRef,
        e: &E,
        backoffs: &mut HashMap<ObjectRef, Backoff>,
    ) -> Option<Duration> {
        let policy = e.on_error();
        if policy == OnError::GiveUp {
            backoffs.remove(key);
            tracing::error!(controller = %self.name, object = %key, error = %e, "reconcile failed; not retrying until something changes");
            return None;
        }
        let delay = backoffs
            .entry(key.clone())
            .or_insert_with(|| self.retry.fresh())
            .next_delay();
        if policy == OnError::RetryQuietly {
            tracing::debug!(controller = %self.name, object = %key, error = %e, retry_in_ms = delay.as_millis() as u64, "reconcile lost a race; retrying");
        } else {
            tracing::warn!(controller = %self.name, object = %key, error = %e, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
        }
        Some(delay)
    }

    /// Dropping the controller drops its hold on the informers (the last holder's
    /// drop stops a watch) and closes its trigger channel (its subscriptions end).
    fn stop(self) {
        tracing::info!(controller = %self.name, "stopped");
    }
}

/// A key was triggered: queue it now, or at the end of its debounce period.
fn admit(key: ObjectRef, debouncer: &mut Debouncer, queue: &mut Queue, timers: &mut Timers) {
    match debouncer.trigger(&key, Instant::now()) {
        Admit::Now => queue.push(key),
        Admit::After(wait) => timers.debounced(key, wait),
        Admit::Merged => {}
    }
}

/// Subscribe to the shared informer of `api` and `params`: each change queues the keys
/// `mapper` gives for its object(s). Returns the informer's cache and a hold on it.
fn follow<R: Resource>(
    api: Api<R>,
    params: ListParams,
    trigger: Trigger,
    mapper: impl Fn(&R) -> Vec<ObjectRef> + Send + Sync + 'static,
) -> (Store<R>, Arc<dyn std::any::Any + Send + Sync>) {
    let informer = informer(api, params);
    informer.subscribe(move |change: &Change<R>| {
        let keys = match change {
            Change::Applied(r) | Change::Deleted(r) => mapper(r),
            Change::Restarted(all) => all.iter().flat_map(&mapper).collect(),
        };
        for key in keys {
            let _ = trigger.send(key);
        }
        // A stopped controller has dropped its receiver: unsubscribe.
        !trigger.is_closed()
    });
    (informer.store(), informer)
}

/// A timed run of a key.
#[derive(Debug, PartialEq, Eq)]
enum Timer {
    /// A requeue or retry: the key is triggered (and so debounced like any trigger).
    Requeue(ObjectRef),
    /// The end of the key's debounce period: the key is queued.
    Debounced(ObjectRef),
}

/// Every timed run of a controller, in one delay queue; at most one requeue per key.
#[derive(Default)]
struct Timers {
    queue: DelayQueue<Timer>,
    requeues: HashMap<ObjectRef, delay_queue::Key>,
}

impl Timers {
    /// Run `key` again after `delay`, replacing its pending requeue if it has one.
    fn requeue(&mut self, key: ObjectRef, delay: Duration) {
        match self.requeues.get(&key) {
            Some(pending) => self.queue.reset(pending, delay),
            None => {
                let pending = self.queue.insert(Timer::Requeue(key.clone()), delay);
                self.requeues.insert(key, pending);
            }
        }
    }

    /// Queue `key` after `wait`, at the end of its debounce period (the debouncer
    /// holds each key once, so there is at most one such timer per key).
    fn debounced(&mut self, key: ObjectRef, wait: Duration) {
        self.queue.insert(Timer::Debounced(key), wait);
    }

    /// The next timer that fires; `None` at once when there is none.
    async fn next(&mut self) -> Option<Timer> {
        let fired = std::future::poll_fn(|cx| self.queue.poll_expired(cx)).await?;
        let timer = fired.into_inner();
        if let Timer::Requeue(key) = &timer {
            self.requeues.remove(key);
        }
        Some(timer)
    }
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

    /// A reconcile failure that carries its own policy.
    #[derive(Debug)]
    struct Failure(OnError);

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failed ({:?})", self.0)
        }
    }

    impl ReconcileError for Failure {
        fn on_error(&self) -> OnError {
            self.0
        }
    }

    /// A controller of a ready cache holding one Cluster, `a`, with a backoff without
    /// jitter (100 ms, then 200 ms, 400 ms, ...).
    fn controller_of_a() -> Controller<crds::Cluster> {
        let (store, mut writer) = super::super::reflector::store();
        let a = crds::Cluster::new("a", crds::ClusterSpec::default());
        writer.apply(&Change::Restarted(vec![a]));
        let (tx, rx) = mpsc::unbounded_channel();
        let mut controller = Controller::on(store, tx, rx);
        controller.retry = Backoff::new(ERROR_BACKOFF.0, ERROR_BACKOFF.1).without_jitter();
        controller
    }

    /// Run `controller` for a minute of paused time, triggering `a` at each of
    /// `triggers` (ms after the start); the `n`th reconcile answers `answer(n)`. The ms
    /// after the start at which each reconcile began.
    async fn reconciled_at(
        controller: Controller<crds::Cluster>,
        triggers: &[u64],
        answer: impl Fn(usize) -> Result<Action, Failure> + Send + Sync + 'static,
    ) -> Vec<u128> {
        let start = Instant::now();
        let trigger = Arc::new(controller.trigger());
        for &at in triggers {
            let at = start + Duration::from_millis(at);
            let trigger = trigger.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                trigger(ObjectRef::new(None, "a"));
            });
        }
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = calls.clone();
        let answer = Arc::new(answer);
        controller
            .run(
                move |_| {
                    let mut calls = seen.lock().unwrap();
                    calls.push(start.elapsed().as_millis());
                    let result = answer(calls.len() - 1);
                    async move { result }
                },
                tokio::time::sleep(Duration::from_secs(60)),
            )
            .await;
        let calls = calls.lock().unwrap().clone();
        calls
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_runs_the_key_once_at_its_time() {
        let at = reconciled_at(controller_of_a(), &[], |n| {
            Ok(match n {
                0 => Action::requeue(Duration::from_secs(5)),
                _ => Action::await_change(),
            })
        })
        .await;
        assert_eq!(at, [0, 5000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_requeue_of_a_key_replaces_the_first() {
        let at = reconciled_at(controller_of_a(), &[1000], |n| {
            Ok(match n {
                0 => Action::requeue(Duration::from_secs(10)),
                1 => Action::requeue(Duration::from_secs(3)),
                _ => Action::await_change(),
            })
        })
        .await;
        assert_eq!(at, [0, 1000, 4000], "the 10 s requeue is gone");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retried_error_backs_off_doubling_and_a_success_starts_over() {
        let at = reconciled_at(controller_of_a(), &[], |n| match n {
            0 | 2 | 3 | 5 => Err(Failure(OnError::Retry)),
            1 => Err(Failure(OnError::RetryQuietly)),
            4 => Ok(Action::requeue(Duration::from_secs(1))),
            _ => Ok(Action::await_change()),
        })
        .await;
        // Failures at 0, 100, 300, 700 wait 100, 200, 400, 800 ms; the success at 1500
        // requeues after 1 s, and the failure then waits 100 ms again.
        assert_eq!(at, [0, 100, 300, 700, 1500, 2500, 2600]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_given_up_error_is_not_requeued() {
        let at = reconciled_at(controller_of_a(), &[10_000], |n| match n {
            0 => Err(Failure(OnError::GiveUp)),
            _ => Ok(Action::await_change()),
        })
        .await;
        assert_eq!(at, [0, 10_000], "run again only by the trigger");
    }

    #[tokio::test(start_paused = true)]
    async fn a_debounced_burst_runs_once_at_the_end_of_the_period() {
        let controller = controller_of_a().debounce(Duration::from_millis(100));
        let at = reconciled_at(controller, &[10, 20, 30], |_| Ok(Action::await_change())).await;
        assert_eq!(
            at,
            [0, 10, 110],
            "the triggers at 20 and 30 ms merge into one run"
        );
    }
}
