//! `oakestra down`: stopping `oakestra up` leaves its workloads running (and says so);
//! `oakestra down` then stops them.

use std::process::Command;
use std::time::Duration;

use client::{Api, ListParams};
use crds::{Instance, Phase};
use e2e::{eventually, free_port, processes_matching, Oakestra};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_stops_what_a_stopped_up_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (api_port, cluster_port, web_port) = (free_port(), free_port(), free_port());
    let args = e2e::up_args(api_port, cluster_port, &data, &["--runtime", "process"]);
    let mut up = Oakestra::start("up", &args, Some(api_port), dir.path());
    let workload = format!("http.server {web_port}");
    let _cleanup = e2e::KillMatching(vec![workload.clone()]);
    let manifest = format!(
        "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  template:\n    runtime: process\n    executable: /bin/sh\n    command: [-c, 'exec python3 -m http.server {web_port} --bind 127.0.0.1']\n    resources: {{cpuMillicores: 100, memoryMiB: 64}}\n"
    );
    let kubeconfig = e2e::up_kubeconfig(&data);
    e2e::apply_manifest(&kubeconfig, dir.path(), "web.yaml", &manifest);
    let api: Api<Instance> = e2e::tier_client(&kubeconfig).api(Some("default"));
    eventually("the replica Running", Duration::from_secs(60), || async {
        let (items, _) = api.list(&ListParams::default()).await.ok()?;
        items
            .iter()
            .any(|i| i.status.as_ref().is_some_and(|s| s.phase == Phase::Running))
            .then_some(())
    })
    .await;
    // Serving, not only started: `python3` may be a pyenv shim whose bash forks
    // subshells with the same command line until it execs the interpreter (two such
    // processes were counted as two workloads once).
    eventually("the workload serving", Duration::from_secs(30), || async {
        std::net::TcpStream::connect(("127.0.0.1", web_port))
            .is_ok()
            .then_some(())
    })
    .await;

    // Ctrl-C stops `up`, which says that the workload keeps running and what stops it.
    let pid = up.pid().expect("up runs").to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let hint = format!("oakestra down --data-dir {}", data.display());
    eventually(
        "up to stop and name `down`",
        Duration::from_secs(30),
        || {
            let stopped = up.log().contains(&hint);
            async move { stopped.then_some(()) }
        },
    )
    .await;
    eventually("the up process gone", Duration::from_secs(30), || async {
        processes_matching(&format!("--data-dir {}", data.display()))
            .is_empty()
            .then_some(())
    })
    .await;
    up.kill9(); // reap it
    let left = processes_matching(&workload);
    assert_eq!(left.len(), 1, "the workload outlives up, once: {left:?}");

    let down = |extra: &[&str]| {
        let out = Command::new(e2e::binary("oakestra"))
            .args(["down", "--data-dir", data.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "oakestra down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = down(&["--runtime", "process"]);
    assert!(out.contains("stopped default/web-"), "{out}");
    assert!(
        processes_matching(&workload).is_empty(),
        "the workload is gone once down returns"
    );
    // Nothing is left to stop.
    let out = down(&["--runtime", "process"]);
    assert!(out.contains("runs no workloads"), "{out}");
}
