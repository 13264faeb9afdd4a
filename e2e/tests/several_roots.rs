//! Several `oakestra root` processes on one etcd are one root to their clients: they
//! share the CA, the tokens and the member records through the store, sealed with the
//! first root's join token (`trust::shared`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crds::Cluster;
use e2e::{binary, eventually, free_port, Etcd, RootServer};

const WAIT: Duration = Duration::from_secs(30);

/// Run `oakestra root` on `store` with a fresh data directory and `extra`, expecting it
/// to stop with an error; returns what it printed.
fn refused_root(store: &str, dir: &Path, name: &str, extra: &[&str]) -> String {
    let data = dir.join(name);
    let port = free_port();
    let mut child = Command::new(binary("oakestra"))
        .args([
            "root",
            "--no-controllers",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            store,
            "--data-dir",
            &data.display().to_string(),
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start oakestra root");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("oakestra root {extra:?} kept running: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "{text}");
    assert!(
        !data.join("pki/ca.crt").exists(),
        "a refused root made a CA of its own: {text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_on_one_etcd_share_their_ca_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start();
    let store = format!("etcd:{}", etcd.url());
    let a = RootServer::start_with(&store, dir.path(), &["--no-controllers"]);
    let token = a.upstream().token;

    // A second root that cannot open what the first shares does not start, and says how.
    let text = refused_root(&store, dir.path(), "no-token", &[]);
    assert!(text.contains("--token"), "{text}");
    let (pin, _) = token.split_once("::").unwrap();
    let wrong_secret = format!("{pin}::abcdef.0123456789abcdef");
    let text = refused_root(&store, dir.path(), "wrong", &["--token", &wrong_secret]);
    assert!(text.contains("do not open"), "{text}");

    let b = RootServer::start_with(&store, dir.path(), &["--no-controllers", "--token", &token]);
    let ca = |root: &RootServer| std::fs::read_to_string(root.data_dir.join("pki/ca.crt")).unwrap();
    assert_eq!(ca(&a), ca(&b), "one CA");
    assert_eq!(e2e::join_token(&b.data_dir), token, "one first join token");

    // Either root's admin credentials work at the other, TLS verified by the shared CA.
    let a_at_b = client::kubeconfig::Kubeconfig::load(&a.kubeconfig())
        .unwrap()
        .resolve(None)
        .unwrap()
        .client(Some(&b.url()))
        .unwrap();
    let clusters = a_at_b.api::<Cluster>(None);
    let cluster = serde_json::json!({"apiVersion": "oakestra.io/v1", "kind": "Cluster",
        "metadata": {"name": "made-through-b"}, "spec": {}});
    clusters.dynamic().create(&cluster).await.unwrap();
    let got = b
        .client()
        .api::<Cluster>(None)
        .get("made-through-b")
        .await
        .unwrap();
    assert_eq!(got.metadata.name, "made-through-b");

    // A token created where root A runs is accepted by root B within a sync or two.
    let out = Command::new(binary("oakestra"))
        .args(["token", "create", "--admin", "--data-dir"])
        .arg(&a.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bearer = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let with_token = |url: &str| {
        client::Client::with_tls(
            url,
            client::tls::TlsOptions {
                ca_pem: Some(ca(&a)),
                identity: None,
                bearer: Some(bearer.clone()),
                server_name: None,
            },
        )
        .unwrap()
    };
    let at_b = with_token(&b.url()).api::<Cluster>(None);
    eventually("root B accepts the token made at root A", WAIT, || async {
        at_b.get("made-through-b").await.ok()
    })
    .await;

    // Deleted at B, refused at A.
    let id = bearer.split_once('.').unwrap().0.to_string();
    let out = Command::new(binary("oakestra"))
        .args(["token", "delete", &id, "--data-dir"])
        .arg(&b.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at_a = with_token(&a.url()).api::<Cluster>(None);
    eventually(
        "root A refuses the token deleted at root B",
        WAIT,
        || async {
            match at_a.get("made-through-b").await {
                Err(e) if e.code() == Some(401) => Some(()),
                _ => None,
            }
        },
    )
    .await;

    // B restarts without --token: its data directory has what it needs.
    let mut b = b;
    b.restart();
    eventually("root B serves again after a restart", WAIT, || async {
        b.client()
            .api::<Cluster>(None)
            .get("made-through-b")
            .await
            .ok()
    })
    .await;
}
