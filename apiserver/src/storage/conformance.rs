//! The conformance suite every [`Storage`] backend must pass.
//!
//! A backend's test file implements [`Harness`] (fresh store, crash and reopen,
//! compaction) and calls [`run_all`]. The suite asserts what the API server relies on:
//! CRUD with compare-and-swap, lists at a revision, gapless ordered watches that resume
//! from a revision, "too old" once history is gone, concurrent writers, durability.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};

use super::{ListRequest, Storage, StorageError, WatchEvent};

/// Makes stores of one backend for the suite.
#[async_trait]
pub trait Harness: Send {
    /// A fresh, empty store. Earlier stores of this harness may be dropped.
    async fn fresh(&mut self) -> Arc<dyn Storage>;
    /// Crash the current store's backend without a clean shutdown and open it again.
    async fn crash_and_reopen(&mut self, store: Arc<dyn Storage>) -> Arc<dyn Storage>;
    /// Discard history up to `revision` where the backend supports it (etcd
    /// compaction). Backends with a bounded history rely on the suite overflowing it.
    async fn compact(&mut self, store: &dyn Storage, revision: i64);
}

/// Run every conformance check against the harness's backend. Each check runs as a
/// named step, and a failed step does not stop the others: the suite then fails with
/// the name and message of every step that failed.
pub async fn run_all(harness: &mut dyn Harness) {
    let mut failed = Vec::new();
    step(&mut failed, "crud", async {
        crud(harness.fresh().await.as_ref()).await
    })
    .await;
    step(&mut failed, "read_your_writes", async {
        read_your_writes(harness.fresh().await.as_ref()).await
    })
    .await;
    step(&mut failed, "list", async {
        list(harness.fresh().await.as_ref()).await
    })
    .await;
    step(&mut failed, "watch_order", async {
        watch_order(harness.fresh().await.as_ref()).await
    })
    .await;
    step(&mut failed, "watch_resume", async {
        watch_resume(harness.fresh().await.as_ref()).await
    })
    .await;
    step(&mut failed, "too_old", too_old(&mut *harness)).await;
    step(&mut failed, "concurrent_writers", async {
        concurrent_writers(harness.fresh().await).await
    })
    .await;
    step(&mut failed, "durability", durability(&mut *harness)).await;
    assert!(
        failed.is_empty(),
        "storage conformance failed in {} step(s):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// Run one step; a panic in it is recorded in `failed` as `name: message`.
async fn step(failed: &mut Vec<String>, name: &str, check: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(check).catch_unwind().await {
        failed.push(format!("{name}: {}", crate::panic_message(panic.as_ref())));
    }
}

async fn crud(s: &dyn Storage) {
    let a = s.create("/t/a", b"one".to_vec()).await.expect("create");
    assert_eq!(a.create_revision, a.mod_revision);
    assert!(matches!(
        s.create("/t/a", b"x".to_vec()).await,
        Err(StorageError::AlreadyExists { .. })
    ));
    let got = s.get("/t/a").await.unwrap().expect("present");
    assert_eq!(
        (&got.value[..], got.mod_revision),
        (&b"one"[..], a.mod_revision)
    );

    let b = s
        .update("/t/a", b"two".to_vec(), a.mod_revision)
        .await
        .expect("update");
    assert!(b.mod_revision > a.mod_revision);
    assert_eq!(b.create_revision, a.create_revision);
    match s.update("/t/a", b"stale".to_vec(), a.mod_revision).await {
        Err(StorageError::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (a.mod_revision, b.mod_revision)),
        other => panic!("stale update must conflict, got {other:?}"),
    }
    assert!(matches!(
        s.delete("/t/a", Some(a.mod_revision)).await,
        Err(StorageError::Conflict { .. })
    ));
    assert_eq!(
        &s.get("/t/a").await.unwrap().unwrap().value[..],
        b"two",
        "failed writes change nothing"
    );

    let d = s
        .delete("/t/a", Some(b.mod_revision))
        .await
        .expect("delete");
    assert_eq!(&d.value[..], b"two");
    assert!(d.mod_revision > b.mod_revision);
    assert!(s.get("/t/a").await.unwrap().is_none());
    assert!(matches!(
        s.update("/t/a", vec![], d.mod_revision).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete("/t/a", None).await,
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(s.revision().await.unwrap(), d.mod_revision);
}

/// A read right after an acknowledged write sees it.
async fn read_your_writes(s: &dyn Storage) {
    for i in 0..200 {
        let key = format!("/ryw/{}", i % 3);
        s.create(&key, vec![1]).await.unwrap();
        let listed = s
            .list(ListRequest {
                prefix: "/ryw/".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            listed.items.len(),
            1,
            "iteration {i}: a created key is listed at once"
        );
        s.delete(&key, None).await.unwrap();
        let listed = s
            .list(ListRequest {
                prefix: "/ryw/".into(),
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            listed.items.is_empty(),
            "iteration {i}: a deleted key is gone at once: {:?}",
            listed.items
        );
        assert!(s.get(&key).await.unwrap().is_none());
    }
}

async fn list(s: &dyn Storage) {
    for k in ["/l/b", "/l/a", "/l/c", "/lx/z", "/k/a"] {
        s.create(k, k.as_bytes().to_vec()).await.unwrap();
    }
    let all = s
        .list(ListRequest {
            prefix: "/l/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/l/a", "/l/b", "/l/c"], "sorted, prefix only");
    assert_eq!(all.revision, s.revision().await.unwrap());
    assert!(!all.more);

    // Pages of two cover everything once.
    let page = s
        .list(ListRequest {
            prefix: "/l/".into(),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(page.more);
    let rest = s
        .list(ListRequest {
            prefix: "/l/".into(),
            start_after: Some(page.items[1].key.clone()),
            limit: Some(2),
            revision: Some(page.revision),
        })
        .await
        .unwrap();
    assert_eq!(
        rest.items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        ["/l/c"]
    );
    assert!(!rest.more);

    // A list at an older revision shows the state as it was.
    let before = all.revision;
    let b = s.get("/l/b").await.unwrap().unwrap();
    s.update("/l/b", b"changed".to_vec(), b.mod_revision)
        .await
        .unwrap();
    s.delete("/l/a", None).await.unwrap();
    s.create("/l/d", b"new".to_vec()).await.unwrap();
    let old = s
        .list(ListRequest {
            prefix: "/l/".into(),
            revision: Some(before),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(old.revision, before);
    let old: Vec<_> = old
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), &kv.value[..]))
        .collect();
    assert_eq!(
        old,
        [("/l/a", &b"/l/a"[..]), ("/l/b", b"/l/b"), ("/l/c", b"/l/c")]
    );
    let now = s
        .list(ListRequest {
            prefix: "/l/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let now: Vec<_> = now
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), &kv.value[..]))
        .collect();
    assert_eq!(
        now,
        [
            ("/l/b", &b"changed"[..]),
            ("/l/c", b"/l/c"),
            ("/l/d", b"new")
        ]
    );
}

/// Apply a mix of writes under `prefix`; returns the revisions they got.
async fn mixed_writes(s: &dyn Storage, prefix: &str, n: usize) -> Vec<i64> {
    let mut revisions = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}{}", i % 7);
        let rev = match s.get(&key).await.unwrap() {
            None => s.create(&key, vec![i as u8]).await.unwrap().mod_revision,
            Some(kv) if i % 3 == 0 => {
                s.delete(&key, Some(kv.mod_revision))
                    .await
                    .unwrap()
                    .mod_revision
            }
            Some(kv) => {
                s.update(&key, vec![i as u8], kv.mod_revision)
                    .await
                    .unwrap()
                    .mod_revision
            }
        };
        revisions.push(rev);
    }
    revisions
}

async fn collect(stream: &mut super::WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!("watch delivered {} of {n} events, then stalled", out.len())
            });
        out.push(next.expect("stream ended early").expect("watch error"));
    }
    out
}

async fn watch_order(s: &dyn Storage) {
    s.create("/other/x", vec![]).await.unwrap();
    let start = s.revision().await.unwrap();
    let mut w = s.watch("/w/", start).await.unwrap();
    let revisions = mixed_writes(s, "/w/", 100).await;
    s.create("/other/y", vec![]).await.unwrap();
    let events = collect(&mut w, 100).await;
    let seen: Vec<i64> = events.iter().map(WatchEvent::revision).collect();
    assert_eq!(seen, revisions, "every write once, in order, nothing else");
    // Kinds match what happened to each key.
    for e in &events {
        assert!(e.kv().key.starts_with("/w/"));
        if let WatchEvent::Deleted(kv) = e {
            assert!(!kv.value.is_empty(), "a deletion carries the last value");
        }
    }
    assert!(matches!(events[0], WatchEvent::Created(_)));
    // An update carries the value it replaced: the key's previous event's value.
    let mut last: std::collections::HashMap<String, bytes::Bytes> =
        std::collections::HashMap::new();
    for e in &events {
        if let WatchEvent::Updated { kv, prev } = e {
            let prev = prev.as_ref().expect("an update carries the previous value");
            assert_eq!(
                Some(&prev.value),
                last.get(&kv.key),
                "previous value of {}",
                kv.key
            );
            assert!(prev.mod_revision < kv.mod_revision);
        }
        match e {
            WatchEvent::Deleted(kv) => last.remove(&kv.key),
            other => last.insert(other.kv().key.clone(), other.kv().value.clone()),
        };
    }
}

async fn watch_resume(s: &dyn Storage) {
    let start = s.revision().await.unwrap();
    let revisions = mixed_writes(s, "/r/", 40).await;
    // Resume from the middle: exactly the tail, then live events.
    let mid = revisions[19];
    let mut w = s.watch("/r/", mid).await.unwrap();
    let more = mixed_writes(s, "/r/", 10).await;
    let events = collect(&mut w, 30).await;
    let expected: Vec<i64> = revisions[20..].iter().chain(&more).copied().collect();
    assert_eq!(
        events.iter().map(WatchEvent::revision).collect::<Vec<_>>(),
        expected
    );
    // From the start: everything.
    let mut w = s.watch("/r/", start).await.unwrap();
    assert_eq!(collect(&mut w, 50).await.len(), 50);
}

async fn too_old(h: &mut dyn Harness) {
    let s = h.fresh().await;
    s.create("/o/first", vec![]).await.unwrap();
    let start = s.revision().await.unwrap();
    // More writes than any bounded history in the test harnesses keeps.
    let revisions = mixed_writes(s.as_ref(), "/o/", 300).await;
    let last = *revisions.last().unwrap();
    h.compact(s.as_ref(), last - 5).await;
    match s.watch("/o/", start).await {
        Err(StorageError::TooOld { .. }) => {}
        Ok(mut w) => {
            let first = tokio::time::timeout(Duration::from_secs(10), w.next())
                .await
                .expect("no answer");
            assert!(
                matches!(first, Some(Err(StorageError::TooOld { .. }))),
                "expected too old, got {first:?}"
            );
        }
        Err(e) => panic!("expected too old, got {e}"),
    }
    // Recent history is still there.
    let mut w = s.watch("/o/", last - 2).await.unwrap();
    assert_eq!(
        collect(&mut w, 2)
            .await
            .iter()
            .map(WatchEvent::revision)
            .collect::<Vec<_>>(),
        revisions[298..]
    );
}

async fn concurrent_writers(s: Arc<dyn Storage>) {
    s.create("/c/counter", b"0".to_vec()).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..25 {
                revisions.push(
                    s.create(&format!("/c/k{w}-{i}"), vec![])
                        .await
                        .unwrap()
                        .mod_revision,
                );
                loop {
                    let cur = s.get("/c/counter").await.unwrap().unwrap();
                    let n: u64 = String::from_utf8_lossy(&cur.value).parse().unwrap();
                    match s
                        .update(
                            "/c/counter",
                            (n + 1).to_string().into_bytes(),
                            cur.mod_revision,
                        )
                        .await
                    {
                        Ok(kv) => {
                            revisions.push(kv.mod_revision);
                            break;
                        }
                        Err(StorageError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            revisions
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        for r in t.await.unwrap() {
            assert!(all.insert(r), "revision {r} handed out twice");
        }
    }
    assert_eq!(all.len(), 400);
    let counter = s.get("/c/counter").await.unwrap().unwrap();
    assert_eq!(&counter.value[..], b"200", "no increment lost");
}

async fn durability(h: &mut dyn Harness) {
    let s = h.fresh().await;
    let mut written = Vec::new();
    for i in 0..50 {
        written.push(
            s.create(&format!("/d/{i:02}"), format!("v{i}").into_bytes())
                .await
                .unwrap(),
        );
    }
    let last = s.revision().await.unwrap();
    let s = h.crash_and_reopen(s).await;
    let listed = s
        .list(ListRequest {
            prefix: "/d/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.items, written,
        "every acknowledged write survives the crash"
    );
    assert!(listed.revision >= last);
    let next = s.create("/d/after", vec![]).await.unwrap();
    assert!(next.mod_revision > last, "revisions never go backwards");
}
