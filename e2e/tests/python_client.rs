//! The official Kubernetes Python client against a real `oakestra root`, over TLS with
//! the root's admin kubeconfig, as a user runs it (`tests/python/official_client.py`).
//! `scripts/deps.sh` installs the client in a virtual environment.

use std::process::Command;

use e2e::RootServer;
use serde_json::Value;

/// Run `tests/python/SCRIPT` against a fresh root without controllers (nothing but the
/// script writes: its dry runs must leave the resourceVersion as it was), and return
/// the JSON it printed.
fn run_script(script: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let root = RootServer::start_with(
        &format!("embedded:{}", dir.path().join("root").display()),
        dir.path(),
        &["--no-controllers"],
    );
    let script = e2e::workspace_root().join("e2e/tests/python").join(script);
    let out = Command::new(e2e::python())
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
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

#[test]
fn the_official_python_client_works_unchanged() {
    let seen = run_script("official_client.py");
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

#[test]
fn the_python_dynamic_client_applies_server_side() {
    let seen = run_script("dynamic_client.py");
    let expected = serde_json::json!({
        "managers": ["py"],
        "reapply_same_version": true,
        "conflict": [".spec.replicas"],
        "dry_run_replicas": 5,
        "stored_after_dry_run": 1,
        "forced_replicas": 3,
        "replicas_owner": ["other"],
        "json_patched_replicas": 4,
        "pages": [2, 2],
        "bookmark": true,
    });
    assert_eq!(seen, expected);
}
