//! The etcd backend: one key per object under a prefix, `resourceVersion` = etcd's
//! mod revision, compare-and-swap through transactions, watches through etcd watches
//! (compaction surfaces as [`StorageError::TooOld`]).

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

/// A store in an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Prepended to every key, so several installations can share one etcd.
    root: String,
}

fn etcd_err(e: etcd_client::Error) -> StorageError {
    let message = e.to_string();
    if message.contains("required revision has been compacted") {
        return StorageError::TooOld {
            requested: 0,
            oldest: 0,
        };
    }
    StorageError::backend_caused("etcd", message, e)
}

impl EtcdStore {
    /// Connect to `endpoints` (e.g. `http://127.0.0.1:2379`); keys live under `root`.
    pub async fn connect(endpoints: &[String], root: &str) -> Result<Self> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_timeout(std::time::Duration::from_secs(15));
        let mut client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| {
                let message = format!("connecting to {}: {e}", endpoints.join(","));
                StorageError::backend_caused("etcd", message, e)
            })?;
        // Fail now, not on the first request, when etcd is unreachable.
        client.status().await.map_err(|e| {
            let message = format!("etcd at {} is unreachable: {e}", endpoints.join(","));
            StorageError::backend_caused("etcd", message, e)
        })?;
        Ok(EtcdStore {
            client,
            root: root.trim_end_matches('/').to_string(),
        })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.root, key)
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

    /// Run a transaction guarded by `compare`; on failure report why.
    async fn guarded(
        &self,
        key: &str,
        compare: Compare,
        then: TxnOp,
        expected: i64,
    ) -> Result<etcd_client::TxnResponse> {
        let full = self.full(key);
        let txn = Txn::new()
            .when([compare])
            .and_then([then])
            .or_else([TxnOp::get(full, None)]);
        let resp = self.client.kv_client().txn(txn).await.map_err(etcd_err)?;
        if resp.succeeded() {
            return Ok(resp);
        }
        Err(match self.current(resp.op_responses().as_slice()) {
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
        let resp = self
            .client
            .kv_client()
            .get(self.full(key), None)
            .await
            .map_err(etcd_err)?;
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
            .client
            .kv_client()
            .get(start, Some(options))
            .await
            .map_err(|e| match etcd_err(e) {
                StorageError::TooOld { .. } => StorageError::TooOld {
                    requested: request.revision.unwrap_or_default(),
                    oldest: 0,
                },
                other => other,
            })?;
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
        let resp = self
            .guarded(key, compare, TxnOp::put(full, value.clone(), None), 0)
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        Ok(KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: revision,
            mod_revision: revision,
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
        let resp = self
            .guarded(key, compare, then, expected_revision.max(1))
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let create_revision = resp
            .op_responses()
            .iter()
            .find_map(|r| match r {
                TxnOpResponse::Txn(t) => t.op_responses().iter().find_map(|r| match r {
                    TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.create_revision()),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap_or_default();
        Ok(KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision,
            mod_revision: revision,
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
        let resp = self
            .guarded(key, compare, then, expected_revision.unwrap_or(1))
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let deleted = resp.op_responses().iter().find_map(|r| match r {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().map(|kv| self.convert(kv)),
            _ => None,
        });
        let mut kv = deleted.ok_or_else(|| StorageError::NotFound { key: key.into() })?;
        kv.mod_revision = revision;
        Ok(kv)
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        let full = self.full(prefix);
        let options = WatchOptions::new()
            .with_range(prefix_end(&full))
            .with_start_revision(after_revision + 1)
            .with_prev_key();
        let stream = self
            .client
            .watch_client()
            .watch(full, Some(options))
            .await
            .map_err(etcd_err)?;
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
            .client
            .kv_client()
            .get(self.full("/"), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(etcd_err)?;
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
            Ok(None) => return vec![Err(StorageError::backend("etcd", "watch stream closed"))],
            Err(e) => return vec![Err(etcd_err(e))],
        };
        if resp.compact_revision() > 0 {
            return vec![Err(StorageError::TooOld {
                requested: self.after_revision,
                oldest: resp.compact_revision(),
            })];
        }
        if resp.canceled() {
            let message = format!("watch canceled: {}", resp.cancel_reason());
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
