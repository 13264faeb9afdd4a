//! Both storage backends pass the same conformance suite.

use std::sync::Arc;

use apiserver::storage::conformance::{run_all, Harness};
use apiserver::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use apiserver::storage::etcd::EtcdStore;
use apiserver::storage::Storage;
use async_trait::async_trait;

/// Embedded store in a temp dir, with a history small enough for the suite to overflow.
struct Embedded {
    dirs: Vec<tempfile::TempDir>,
    /// Every key under the lazy prefix `/`.
    lazy: bool,
}

impl Embedded {
    fn open(&self, dir: &std::path::Path) -> Arc<dyn Storage> {
        let options = EmbeddedOptions {
            history: 64,
            lazy_prefixes: if self.lazy { vec!["/".into()] } else { vec![] },
        };
        Arc::new(EmbeddedStore::open(dir, options).unwrap())
    }
}

#[async_trait]
impl Harness for Embedded {
    async fn fresh(&mut self) -> Arc<dyn Storage> {
        let dir = tempfile::tempdir().unwrap();
        let store = self.open(dir.path());
        self.dirs.push(dir);
        store
    }
    async fn crash_and_reopen(&mut self, store: Arc<dyn Storage>) -> Arc<dyn Storage> {
        // In-process the closest to a crash is dropping the handle without any flush;
        // the kill -9 test of the server process covers the real thing.
        drop(store);
        let dir = self.dirs.last().unwrap().path();
        self.open(dir)
    }
    async fn compact(&mut self, _store: &dyn Storage, _revision: i64) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    run_all(&mut Embedded {
        dirs: vec![],
        lazy: false,
    })
    .await;
}

/// The same contract when every key may be committed lazily.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_with_lazy_commits_conforms() {
    run_all(&mut Embedded {
        dirs: vec![],
        lazy: true,
    })
    .await;
}

/// A real etcd process per fresh store; crash = kill -9 of etcd.
struct Etcd {
    server: Option<e2e::Etcd>,
}

#[async_trait]
impl Harness for Etcd {
    async fn fresh(&mut self) -> Arc<dyn Storage> {
        let server = e2e::Etcd::start();
        let store = EtcdStore::connect(&[server.url()], "/oakestra-test")
            .await
            .unwrap();
        self.server = Some(server);
        Arc::new(store)
    }
    async fn crash_and_reopen(&mut self, store: Arc<dyn Storage>) -> Arc<dyn Storage> {
        drop(store);
        let server = self.server.as_mut().unwrap();
        server.crash_and_restart();
        Arc::new(
            EtcdStore::connect(&[server.url()], "/oakestra-test")
                .await
                .unwrap(),
        )
    }
    async fn compact(&mut self, _store: &dyn Storage, revision: i64) {
        let url = self.server.as_ref().unwrap().url();
        let mut client = etcd_client::Client::connect([url], None).await.unwrap();
        client.compact(revision, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    run_all(&mut Etcd { server: None }).await;
}
