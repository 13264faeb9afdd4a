//! Lazy commits of the embedded store across a real crash (`abort` of a child process).
//!
//! The child (this test binary again, running the ignored `crash_child` test) writes
//! through an `EmbeddedStore` whose `/lazy/` keys are committed lazily, prints the
//! revisions it was given and aborts without closing the store. The parent reopens the
//! store and checks what a client relies on: durable writes survive, lazy writes older
//! than `LAZY_FOR` survive, and no revision the child handed out is handed out again.

use std::process::Command;
use std::time::Duration;

use apiserver::storage::embedded::{EmbeddedOptions, EmbeddedStore, LAZY_FOR};
use apiserver::storage::{Storage, StorageError};

const CHILD_DIR: &str = "OAKESTRA_CRASH_CHILD_DIR";

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        lazy_prefixes: vec!["/lazy/".into()],
        ..Default::default()
    }
}

/// Run by the parent test only (it is `#[ignore]`d otherwise): write, report, abort.
#[tokio::test]
#[ignore = "the child half of lazy_writes_and_revisions_survive_a_crash"]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let store = EmbeddedStore::open(std::path::Path::new(&dir), options()).unwrap();
    let durable = store.create("/durable/a", b"a".to_vec()).await.unwrap();
    println!("durable {}", durable.mod_revision);
    create_and_report(&store, "early").await;
    // Past the window: the writer has made the early lazy writes durable by now.
    tokio::time::sleep(LAZY_FOR + Duration::from_millis(500)).await;
    create_and_report(&store, "late").await;
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::process::abort();
}

/// Create `/lazy/LABEL-0..3` and print `LABEL REVISION` for each.
async fn create_and_report(store: &EmbeddedStore, label: &str) {
    for i in 0..3 {
        let kv = store
            .create(&format!("/lazy/{label}-{i}"), label.as_bytes().to_vec())
            .await
            .unwrap();
        println!("{label} {}", kv.mod_revision);
    }
}

#[tokio::test]
async fn lazy_writes_and_revisions_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_DIR, dir.path())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "the child should have aborted: {output:?}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let revisions = |label: &str| -> Vec<i64> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(label)?.trim().parse().ok())
            .collect()
    };
    let (durable, early, late) = (
        revisions("durable "),
        revisions("early "),
        revisions("late "),
    );
    assert_eq!(
        (durable.len(), early.len(), late.len()),
        (1, 3, 3),
        "child output: {stdout}"
    );
    let handed_out = *late.iter().max().unwrap();

    let store = EmbeddedStore::open(dir.path(), options()).unwrap();
    let a = store
        .get("/durable/a")
        .await
        .unwrap()
        .expect("durable write lost");
    assert_eq!(a.mod_revision, durable[0]);
    for (i, revision) in early.iter().enumerate() {
        let kv = store
            .get(&format!("/lazy/early-{i}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("lazy write early-{i} older than LAZY_FOR was lost"));
        assert_eq!(kv.mod_revision, *revision);
    }
    // The late lazy writes may be gone, but their revisions are never reused: the
    // store starts past them, and a watch from one of them must relist.
    assert!(store.revision().await.unwrap() > handed_out);
    match store.watch("/", handed_out).await {
        Err(StorageError::TooOld { .. }) => {}
        Err(e) => panic!("expected TooOld, got {e}"),
        Ok(_) => panic!("a watch from a revision a crash may have lost must relist"),
    }
    let next = store.create("/lazy/after", b"z".to_vec()).await.unwrap();
    assert!(next.mod_revision > handed_out);
}

#[tokio::test]
async fn a_clean_close_keeps_revisions_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let store = EmbeddedStore::open(dir.path(), options()).unwrap();
        store.create("/durable/a", b"a".to_vec()).await.unwrap();
        store
            .create("/lazy/b", b"b".to_vec())
            .await
            .unwrap()
            .mod_revision
    };
    let store = EmbeddedStore::open(dir.path(), options()).unwrap();
    assert!(store.get("/lazy/b").await.unwrap().is_some());
    assert_eq!(store.revision().await.unwrap(), last);
    let next = store.create("/durable/c", b"c".to_vec()).await.unwrap();
    assert_eq!(next.mod_revision, last + 1);
}
