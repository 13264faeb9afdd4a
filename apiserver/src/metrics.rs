//! Prometheus metrics of the API server, and a [`Storage`] wrapper that times storage.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::storage::{KeyValue, ListRequest, ListResponse, Result, Storage, WatchStream};

/// Labels of `requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// The resource, with its subresource (`instances/binding`).
    pub resource: String,
    /// The HTTP status answered.
    pub code: u16,
}

/// Labels of `request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// As in [`RequestLabels::verb`].
    pub verb: String,
    /// As in [`RequestLabels::resource`].
    pub resource: String,
}

/// Labels of `storage_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabels {
    /// `embedded` or `etcd`.
    pub backend: String,
    /// `get`, `list`, `create`, `update`, `delete`.
    pub operation: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by verb, resource and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Latency of requests other than watches.
    pub request_seconds: HistogramFamily<VerbLabels>,
    /// Latency of storage operations.
    pub storage_seconds: HistogramFamily<StorageLabels>,
    /// Watches open now.
    pub watchers: Gauge,
}

impl Metrics {
    /// Every metric, registered under the `oakestra_apiserver` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("oakestra_apiserver");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = HistogramFamily::<VerbLabels>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let storage_seconds = HistogramFamily::<StorageLabels>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let watchers = Gauge::default();
        registry.register(
            "requests",
            "API requests by verb, resource and HTTP code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "API request latency by verb and resource",
            request_seconds.clone(),
        );
        registry.register(
            "storage_duration_seconds",
            "Storage operation latency",
            storage_seconds.clone(),
        );
        registry.register("watchers", "Open watch streams", watchers.clone());
        Arc::new(Metrics {
            registry,
            requests,
            request_seconds,
            storage_seconds,
            watchers,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// A store that records the latency of every operation.
pub struct MeteredStore {
    inner: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// `inner`, with every operation timed into `metrics`.
    pub fn wrap(inner: Arc<dyn Storage>, metrics: Arc<Metrics>) -> Arc<dyn Storage> {
        Arc::new(MeteredStore { inner, metrics })
    }

    fn observe(&self, operation: &str, start: Instant) {
        let labels = StorageLabels {
            backend: self.inner.backend().into(),
            operation: operation.into(),
        };
        self.metrics
            .storage_seconds
            .get_or_create(&labels)
            .observe(start.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl Storage for MeteredStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let start = Instant::now();
        let r = self.inner.get(key).await;
        self.observe("get", start);
        r
    }
    async fn list(&self, request: ListRequest) -> Result<ListResponse> {
        let start = Instant::now();
        let r = self.inner.list(request).await;
        self.observe("list", start);
        r
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let start = Instant::now();
        let r = self.inner.create(key, value).await;
        self.observe("create", start);
        r
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: i64) -> Result<KeyValue> {
        let start = Instant::now();
        let r = self.inner.update(key, value, expected_revision).await;
        self.observe("update", start);
        r
    }
    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<KeyValue> {
        let start = Instant::now();
        let r = self.inner.delete(key, expected_revision).await;
        self.observe("delete", start);
        r
    }
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        self.inner.watch(prefix, after_revision).await
    }
    async fn revision(&self) -> Result<i64> {
        self.inner.revision().await
    }
}
