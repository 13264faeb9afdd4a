//! The etcd backend: one key per object under a prefix, `resourceVersion` = etcd's
//! mod revision, compare-and-swap through transactions, watches through etcd watches
//! (compaction surfaces as [`StorageError::TooOld`]).
//!
//! Member loss: every request asks for a member that has a leader, so a member cut
//! off from its quorum refuses at once; an operation is tried again (on whichever
//! member the client picks) while that is safe and [`REQUEST_DEADLINE`] has not
//! passed, then fails with a [`StorageError::Backend`] naming the store
//! (`etcd at URL,URL,URL: …`), which the API answers with a 503. One member lost of
//! three costs an election's worth of latency; a lost quorum, a 503 after the
//! deadline (`e2e/tests/etcd_members.rs`, `docs/operations.md`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use super::{
    prefix_end, KeyValue, ListRequest, ListResponse, Result, Storage, StorageError, WatchEvent,
    WatchStream,
};

/// How long an operation on etcd goes on trying: no attempt starts later than this
/// after the first, and a write, a get or opening a watch gives up at this point.
///
/// A write normally commits in milliseconds. With etcd's default election timeout
/// (1 s, randomized up to 2 s) a cluster that loses its leader has a new one within
/// about 2 s, or about 4 s after a split vote; an operation that meets "no leader"
/// meanwhile, or whose attempt went to the dead leader (`ATTEMPT_TIMEOUT`), is tried
/// again until then, so the loss of one member of three makes requests slower, not
/// failed. Without a quorum no leader comes, and an operation fails after this long
/// instead of hanging: sooner than etcd's own request timeout (5 s + 2 election
/// timeouts = 7 s), so the answer is ours and names the store.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// How long one attempt of a write, a get or opening a watch may wait for its answer
/// before it is abandoned and tried again. etcd answers a write in milliseconds or
/// not at all: a proposal forwarded to a leader that died is lost, and only a new
/// attempt, once a new leader is elected, gets through.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one attempt of a list may take: reading many objects can take seconds,
/// so a list is not cut short by [`REQUEST_DEADLINE`] (which still stops new attempts).
const LIST_TIMEOUT: Duration = Duration::from_secs(15);

/// How long connecting to one member may take. Connecting is one round trip; a member
/// that does not accept within this is treated as down and requests go to the others.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 pings on a connection with open streams (the watch hub's watch is always
/// open): every 10 s, and a member that does not answer within 5 s is dropped, so a
/// watch on a member whose machine vanished (no TCP reset) fails over instead of
/// waiting forever. etcd refuses pings more often than every 5 s
/// (`--grpc-keepalive-min-time`).
const KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(5));

/// The first pause between two attempts of an operation; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// The longest pause between two attempts of an operation.
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// A store in an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Prepended to every key, so several installations can share one etcd.
    root: String,
    /// The endpoints, comma-joined, for messages (`etcd at URL,URL: …`).
    endpoints: Arc<str>,
}

/// What a failed attempt says about whether etcd carried it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It certainly was not: nothing was sent (the connection to the member could not
    /// be made), the member refused it for want of a leader (we require one, see
    /// [`EtcdStore::connect`]), or raft dropped the proposal.
    NotApplied,
    /// It may have been: no answer in time, or the connection was lost after sending.
    /// A read is simply tried again; so is a write, which is one compare-and-swap
    /// transaction: applied whole or not at all, and at most once, since its compare
    /// fails once it has been applied (see [`EtcdStore::guarded`]).
    Unknown,
    /// etcd answered, and asking again would get the same answer.
    Final,
}

/// gRPC's status codes that [`outcome`] tells apart.
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const UNAVAILABLE: i32 = 14;

/// The causes under `e`, outermost first.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(e.source(), |c| c.source())
}

/// Whether `e` is a connection to a member that could not be made, so that nothing
/// was sent (`tonic` puts a `ConnectError` in the chain).
fn refused(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            causes(status).any(|c| format!("{c:?}").starts_with("ConnectError"))
        }
        _ => false,
    }
}

/// Whether `e` says the revision asked for was compacted away.
fn compacted(e: &etcd_client::Error) -> bool {
    e.to_string()
        .contains("required revision has been compacted")
}

fn outcome(e: &etcd_client::Error) -> Outcome {
    let status = match e {
        etcd_client::Error::GRpcStatus(status) => status,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            return Outcome::Unknown
        }
        _ => return Outcome::Final,
    };
    let message = status.message();
    if refused(e)
        || message.contains("etcdserver: no leader")
        || message.contains("raft proposal dropped")
    {
        return Outcome::NotApplied;
    }
    match i32::from(status.code()) {
        CANCELLED | UNKNOWN | DEADLINE_EXCEEDED | UNAVAILABLE => Outcome::Unknown,
        _ => Outcome::Final,
    }
}

/// `e` for a person: etcd's message and the innermost cause under it (e.g.
/// `tcp connect error: Connection refused (os error 111)`, `etcdserver: no leader`).
fn describe(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let message = status.message();
    match causes(status).last().map(|c| c.to_string()) {
        Some(inner) if !message.contains(&inner) => format!("{message}: {inner}"),
        _ => message.to_string(),
    }
}

/// Which kind of operation [`EtcdStore::retrying`] runs: how long one attempt may
/// take, and what its failure says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A get, reading the revision or status, or opening a watch.
    Read,
    /// A list ([`LIST_TIMEOUT`]).
    List,
    /// A write: when it fails after an attempt that may have been applied, its
    /// message says so.
    Write,
}

/// The answer of an attempt that succeeded.
struct Tried<T> {
    value: T,
    /// An earlier attempt may have been carried out (its outcome was
    /// [`Outcome::Unknown`]).
    uncertain: bool,
}

/// What a guarded write did, read from its transaction or, when an earlier attempt's
/// answer was lost, from the key.
struct Written {
    revision: i64,
    /// The key's create revision, where the transaction or the key says.
    create_revision: Option<i64>,
    /// For a delete: the key as it was.
    deleted: Option<KeyValue>,
}

impl EtcdStore {
    /// Connect to `endpoints` (e.g. `http://127.0.0.1:2379`); keys live under `root`.
    ///
    /// Every request asks for a member that has a leader (`with_require_leader`): a
    /// member cut off from its quorum refuses at once instead of queueing the request
    /// until etcd's own timeout, and cancels its watches after 3 election timeouts,
    /// which the watch hub then opens again on a member that has a leader.
    pub async fn connect(endpoints: &[String], root: &str) -> Result<Self> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            // A backstop: each attempt has its own, shorter, timeout (`retrying`).
            .with_timeout(LIST_TIMEOUT + Duration::from_secs(1))
            .with_keep_alive(KEEP_ALIVE.0, KEEP_ALIVE.1)
            .with_require_leader(true);
        let joined: Arc<str> = endpoints.join(",").into();
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| {
                let message = format!("etcd at {joined}: connecting: {e}");
                StorageError::backend_caused("etcd", message, e)
            })?;
        let store = EtcdStore {
            client,
            root: root.trim_end_matches('/').to_string(),
            endpoints: joined,
        };
        // Fail now, not on the first request, when etcd is unreachable.
        store
            .retrying(
                "reading its status (is etcd unreachable?)",
                Op::Read,
                || {
                    let mut client = store.client.clone();
                    async move { client.status().await }
                },
            )
            .await?;
        Ok(store)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.root, key)
    }

    /// The failure of doing `what`, naming the store, with `detail` (what the last
    /// attempt met); `source` is etcd's error, where there is one.
    fn failure(
        &self,
        what: &str,
        detail: &str,
        source: Option<etcd_client::Error>,
    ) -> StorageError {
        let message = format!("etcd at {}: {what}: {detail}", self.endpoints);
        match source {
            Some(e) => StorageError::backend_caused("etcd", message, e),
            None => StorageError::backend("etcd", message),
        }
    }

    /// The error `e` of doing `what`; compaction is [`StorageError::TooOld`].
    fn error(&self, what: &str, e: etcd_client::Error) -> StorageError {
        if compacted(&e) {
            return StorageError::TooOld {
                requested: 0,
                oldest: 0,
            };
        }
        self.failure(what, &describe(&e), Some(e))
    }

    /// Run `attempt` until it succeeds, fails for good ([`Outcome::Final`]), or
    /// [`REQUEST_DEADLINE`] has passed since the first try; `what` names the operation
    /// in messages. One attempt may take [`ATTEMPT_TIMEOUT`], and no longer than the
    /// deadline leaves; a list's attempts may take until [`LIST_TIMEOUT`] has passed
    /// since the first.
    async fn retrying<T, F, Fut>(&self, what: &str, op: Op, mut attempt: F) -> Result<Tried<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let start = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let (mut tries, mut uncertain) = (0, false);
        // What the last member that answered said: more telling, at the end, than a
        // refused connection to a dead one.
        let mut answered: Option<String> = None;
        loop {
            tries += 1;
            let timeout = match op {
                Op::Read | Op::Write => {
                    ATTEMPT_TIMEOUT.min(REQUEST_DEADLINE.saturating_sub(start.elapsed()))
                }
                Op::List => LIST_TIMEOUT.saturating_sub(start.elapsed()),
            };
            let failed = match tokio::time::timeout(timeout, attempt()).await {
                Ok(Ok(value)) => return Ok(Tried { value, uncertain }),
                Ok(Err(e)) => Some(e),
                Err(_) => None,
            };
            let kind = failed.as_ref().map_or(Outcome::Unknown, outcome);
            uncertain |= kind == Outcome::Unknown;
            let detail = match &failed {
                Some(e) => describe(e),
                None => format!("no answer within {timeout:.1?}"),
            };
            let was_refused = failed.as_ref().is_some_and(refused);
            let elapsed = start.elapsed();
            if kind == Outcome::Final || elapsed + backoff >= REQUEST_DEADLINE {
                if failed.as_ref().is_some_and(compacted) {
                    return Err(self.error(what, failed.expect("a compaction error")));
                }
                let detail = match answered {
                    Some(told) if was_refused => told,
                    _ => detail,
                };
                let detail = match tries {
                    1 => detail,
                    _ => format!("{detail} ({tries} tries in {elapsed:.1?})"),
                };
                let detail = match (op, uncertain) {
                    (Op::Write, true) => format!(
                        "{detail}; an attempt may have been applied (read the object to know)"
                    ),
                    _ => detail,
                };
                return Err(self.failure(what, &detail, failed));
            }
            tracing::debug!(error = %detail, what, "etcd request failed; trying again");
            if !was_refused {
                answered = Some(detail);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        KeyValue {
            key: String::from_utf8_lossy(kv.key())
                .strip_prefix(&self.root)
                .unwrap_or_default()
                .to_string(),
            value: bytes::Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }
    }

    /// The current value of `key` read inside a failed transaction's `else` branch.
    fn current(&self, responses: &[TxnOpResponse]) -> Option<KeyValue> {
        responses.iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| self.convert(kv)),
            _ => None,
        })
    }

    /// Run a transaction that does `then` to `key` when `compare` holds (`verb` says
    /// what, for messages; `value` is what a create or update stores); on failure
    /// report why.
    ///
    /// Every write of this store is this one transaction: etcd applies it whole or not
    /// at all, so a write that failed or timed out is never half done; and at most
    /// once, since once it is applied its compare no longer holds. An attempt whose
    /// answer was lost is therefore tried again ([`Outcome::Unknown`]). When the retry
    /// finds the compare failing and the key holding exactly `value`, the lost attempt
    /// was applied and the write succeeded: every object the registry writes carries
    /// its own uid, so another write storing the same bytes is at worst the same
    /// change. A delete has nothing to recognize: a retried delete that finds the key
    /// gone reports [`StorageError::NotFound`], as a delete that lost a race does.
    async fn guarded(
        &self,
        verb: &str,
        key: &str,
        compare: Compare,
        then: TxnOp,
        expected: i64,
        value: Option<&[u8]>,
    ) -> Result<Written> {
        let full = self.full(key);
        let txn = Txn::new()
            .when([compare])
            .and_then([then])
            .or_else([TxnOp::get(full.clone(), None)]);
        let what = format!("{verb} {full}");
        let Tried {
            value: resp,
            uncertain,
        } = self
            .retrying(&what, Op::Write, || {
                let (mut kv, txn) = (self.client.kv_client(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        if resp.succeeded() {
            let responses = resp.op_responses();
            let prev = responses.iter().find_map(|r| match r {
                TxnOpResponse::Txn(t) => t.op_responses().iter().find_map(|r| match r {
                    TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.create_revision()),
                    _ => None,
                }),
                _ => None,
            });
            let deleted = responses.iter().find_map(|r| match r {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(|kv| self.convert(kv)),
                _ => None,
            });
            return Ok(Written {
                revision,
                create_revision: prev,
                deleted,
            });
        }
        Err(match self.current(resp.op_responses().as_slice()) {
            Some(cur) if uncertain && value.is_some_and(|v| cur.value == v) => {
                tracing::info!(key, "an etcd write whose answer was lost was applied");
                return Ok(Written {
                    revision: cur.mod_revision,
                    create_revision: Some(cur.create_revision),
                    deleted: None,
                });
            }
            None => StorageError::NotFound { key: key.into() },
            Some(cur) if expected == 0 => StorageError::AlreadyExists { key: cur.key },
            Some(cur) => StorageError::Conflict {
                key: key.into(),
                expected,
                actual: cur.mod_revision,
            },
        })
    }
}

#[async_trait]
impl Storage for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let full = self.full(key);
        let resp = self
            .retrying(&format!("reading {full}"), Op::Read, || {
                let (mut kv, full) = (self.client.kv_client(), full.clone());
                async move { kv.get(full, None).await }
            })
            .await?
            .value;
        Ok(resp.kvs().first().map(|kv| self.convert(kv)))
    }

    async fn list(&self, request: ListRequest) -> Result<ListResponse> {
        let prefix = self.full(&request.prefix);
        let start = match &request.start_after {
            Some(after) => {
                let mut k = self.full(after).into_bytes();
                k.push(0);
                k
            }
            None => prefix.clone().into_bytes(),
        };
        let mut options = GetOptions::new()
            .with_range(prefix_end(&prefix))
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        if let Some(limit) = request.limit.filter(|l| *l > 0) {
            options = options.with_limit(limit as i64);
        }
        if let Some(revision) = request.revision.filter(|r| *r > 0) {
            options = options.with_revision(revision);
        }
        let resp = self
            .retrying(&format!("listing {prefix}"), Op::List, || {
                let (mut kv, start, options) =
                    (self.client.kv_client(), start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await
            .map_err(|e| match e {
                StorageError::TooOld { .. } => StorageError::TooOld {
                    requested: request.revision.unwrap_or_default(),
                    oldest: 0,
                },
                other => other,
            })?
            .value;
        let revision = match request.revision.filter(|r| *r > 0) {
            Some(r) => r,
            None => resp.header().map(|h| h.revision()).unwrap_or_default(),
        };
        Ok(ListResponse {
            items: resp.kvs().iter().map(|kv| self.convert(kv)).collect(),
            revision,
            more: resp.more(),
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let full = self.full(key);
        let compare = Compare::create_revision(full.clone(), CompareOp::Equal, 0);
        let put = TxnOp::put(full, value.clone(), None);
        let written = self
            .guarded("creating", key, compare, put, 0, Some(&value))
            .await?;
        Ok(KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: written.create_revision.unwrap_or(written.revision),
            mod_revision: written.revision,
        })
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: i64) -> Result<KeyValue> {
        let full = self.full(key);
        let compare = Compare::mod_revision(full.clone(), CompareOp::Equal, expected_revision);
        let then = TxnOp::txn(Txn::new().and_then([TxnOp::put(
            full.clone(),
            value.clone(),
            Some(etcd_client::PutOptions::new().with_prev_key()),
        )]));
        let expected = expected_revision.max(1);
        let written = self
            .guarded("updating", key, compare, then, expected, Some(&value))
            .await?;
        Ok(KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: written.create_revision.unwrap_or_default(),
            mod_revision: written.revision,
        })
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<KeyValue> {
        let full = self.full(key);
        let compare = match expected_revision {
            Some(rev) => Compare::mod_revision(full.clone(), CompareOp::Equal, rev),
            None => Compare::create_revision(full.clone(), CompareOp::Greater, 0),
        };
        let then = TxnOp::delete(
            full,
            Some(etcd_client::DeleteOptions::new().with_prev_key()),
        );
        let expected = expected_revision.unwrap_or(1);
        let written = self
            .guarded("deleting", key, compare, then, expected, None)
            .await?;
        let mut kv = written
            .deleted
            .ok_or_else(|| StorageError::NotFound { key: key.into() })?;
        kv.mod_revision = written.revision;
        Ok(kv)
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        let full = self.full(prefix);
        let options = WatchOptions::new()
            .with_range(prefix_end(&full))
            .with_start_revision(after_revision + 1)
            .with_prev_key();
        let stream = self
            .retrying(&format!("watching {full}"), Op::Read, || {
                let (mut watch, full, options) =
                    (self.client.watch_client(), full.clone(), options.clone());
                async move { watch.watch(full, Some(options)).await }
            })
            .await?
            .value;
        let state = WatchState {
            store: self.clone(),
            stream,
            done: false,
            after_revision,
        };
        let events = futures::stream::unfold(state, |mut state| async move {
            if state.done {
                return None;
            }
            let batch = state.next_batch().await;
            state.done = batch.iter().any(|r| r.is_err());
            Some((futures::stream::iter(batch), state))
        });
        Ok(events.flatten().boxed())
    }

    async fn revision(&self) -> Result<i64> {
        let resp = self
            .retrying("reading the revision", Op::Read, || {
                let mut kv = self.client.kv_client();
                let options = GetOptions::new().with_count_only();
                async move { kv.get(self.full("/"), Some(options)).await }
            })
            .await?
            .value;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }
}

struct WatchState {
    store: EtcdStore,
    /// Dropping the stream cancels the etcd watch.
    stream: etcd_client::WatchStream,
    done: bool,
    after_revision: i64,
}

impl WatchState {
    /// The events of the next watch response, or one error that ends the stream.
    async fn next_batch(&mut self) -> Vec<Result<WatchEvent>> {
        let resp = match self.stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                let message = format!("etcd at {}: watch stream closed", self.store.endpoints);
                return vec![Err(StorageError::backend("etcd", message))];
            }
            Err(e) => return vec![Err(self.store.error("watching", e))],
        };
        if resp.compact_revision() > 0 {
            return vec![Err(StorageError::TooOld {
                requested: self.after_revision,
                oldest: resp.compact_revision(),
            })];
        }
        if resp.canceled() {
            let message = format!(
                "etcd at {}: watch canceled: {}",
                self.store.endpoints,
                resp.cancel_reason()
            );
            return vec![Err(StorageError::backend("etcd", message))];
        }
        resp.events()
            .iter()
            .filter_map(|event| {
                let kv = self.store.convert(event.kv()?);
                Some(Ok(match event.event_type() {
                    EventType::Put if kv.create_revision == kv.mod_revision => {
                        WatchEvent::Created(kv)
                    }
                    EventType::Put => WatchEvent::Updated {
                        kv,
                        prev: event.prev_kv().map(|p| self.store.convert(p)),
                    },
                    EventType::Delete => {
                        let mut last = event
                            .prev_kv()
                            .map(|p| self.store.convert(p))
                            .unwrap_or(kv.clone());
                        last.mod_revision = kv.mod_revision;
                        WatchEvent::Deleted(last)
                    }
                }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port nothing listens on (it was free a moment ago).
    fn dead_endpoint() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn a_refused_connection_was_not_applied() {
        let options = etcd_client::ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
        let mut client = Client::connect([dead_endpoint()], Some(options))
            .await
            .unwrap();
        let e = client.status().await.unwrap_err();
        assert!(refused(&e), "{e:?}");
        assert_eq!(outcome(&e), Outcome::NotApplied, "{e:?}");
        assert!(
            describe(&e).contains("Connection refused"),
            "{}",
            describe(&e)
        );
    }

    #[tokio::test]
    async fn an_unreachable_store_fails_within_the_deadline_naming_it() {
        let endpoints = [dead_endpoint(), dead_endpoint()];
        let started = Instant::now();
        let e = EtcdStore::connect(&endpoints, "/oakestra")
            .await
            .err()
            .expect("no etcd there");
        let took = started.elapsed();
        let message = e.to_string();
        assert!(
            message.contains(&format!("etcd at {}: ", endpoints.join(","))),
            "{message}"
        );
        assert!(message.contains("Connection refused"), "{message}");
        assert!(matches!(e, StorageError::Backend { .. }), "{e:?}");
        assert!(
            took >= REQUEST_DEADLINE - MAX_BACKOFF && took < REQUEST_DEADLINE + ATTEMPT_TIMEOUT,
            "tried for {took:?}"
        );
    }
}
