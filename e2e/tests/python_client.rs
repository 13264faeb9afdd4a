//! The official Kubernetes Python client against a real `oakestra root`, over TLS with
//! the root's admin kubeconfig, as a user runs it (`tests/python/official_client.py`).
//! `scripts/deps.sh` installs the client in a virtual environment.

use std::path::PathBuf;
use std::process::Command;

use e2e::RootServer;
use serde_json::Value;

/// The Python of the environment `scripts/deps.sh` installs the client in.
fn python() -> PathBuf {
    let env = std::env::var_os("OAKESTRA_PYTHON_ENV")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("oakestra/python"))
        })
        .expect("HOME or XDG_CACHE_HOME is set");
    let python = env.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/deps.sh installs the Kubernetes Python client there",
        python.display()
    );
    python
}

#[test]
fn the_official_python_client_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // Without controllers, nothing but the script writes (its dry run must leave the
    // resourceVersion as it was).
    let root = RootServer::start_with(
        &format!("embedded:{}", dir.path().join("root").display()),
        dir.path(),
        &["--no-controllers"],
    );
    let script = e2e::workspace_root().join("e2e/tests/python/official_client.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(root.kubeconfig())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    let expected = serde_json::json!({
        "created_uid": true,
        "replicas_after_dry_run": 2,
        "same_version_after_dry_run": true,
        "replicas_after_patch": 3,
        "listed": ["py-web"],
        "namespaces": ["default"],
        "watched": "MODIFIED",
        "anonymous": 401,
        "anonymous_reason": "Unauthorized",
        "after_delete": 404,
    });
    assert_eq!(seen, expected);
}
