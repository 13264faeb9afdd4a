//! 1-DOC: `oakestra up` runs root, cluster and worker in one process; a Service of two
//! replicas of an HTTP server runs as native processes and each answers HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use client::tls::{ClientCertificate, TlsOptions};
use client::{Api, Client, ListParams};
use crds::{Instance, Phase};
use e2e::{eventually, free_port, Oakestra};

/// A port p with p+1 free too.
fn two_free_ports() -> u16 {
    loop {
        let p = free_port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A child process killed (and reaped) when it goes out of scope, the test failing or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The text of the file `name` in `dir`.
fn read(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// TLS to the agent of `node`, which answers its cluster only: the cluster's proxy
/// certificate in `cluster_pki`, checking the agent's name (`NODE.node.oakestra`)
/// against the cluster's CA.
fn agent_tls(cluster_pki: &Path, node: &str) -> TlsOptions {
    TlsOptions {
        ca_pem: Some(read(cluster_pki, "ca.crt")),
        identity: Some(
            ClientCertificate::new(
                &read(cluster_pki, "proxy.crt"),
                &read(cluster_pki, "proxy.key"),
            )
            .unwrap(),
        ),
        bearer: None,
        server_name: Some(format!("{node}.node.oakestra")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oakestra_up_runs_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (api_port, cluster_port) = (free_port(), free_port());
    let args = e2e::up_args(api_port, cluster_port, &data, &["--runtime", "process"]);
    let _up = Oakestra::start("up", &args, Some(api_port), dir.path());
    let base = two_free_ports();
    let _cleanup = e2e::KillMatching(vec![
        format!("http.server {base}"),
        format!("http.server {}", base + 1),
    ]);
    let manifest = format!(
        "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  template:\n    runtime: process\n    executable: /bin/sh\n    command: [-c, 'exec python3 -m http.server $(({base} + OAKESTRA_ORDINAL)) --bind 127.0.0.1']\n    resources: {{cpuMillicores: 200, memoryMiB: 128}}\n"
    );
    let kubeconfig = e2e::up_kubeconfig(&data);
    e2e::apply_manifest(&kubeconfig, dir.path(), "web.yaml", &manifest);

    let api: Api<Instance> = e2e::tier_client(&kubeconfig).api(Some("default"));
    eventually("both replicas Running", Duration::from_secs(60), || async {
        let (items, _) = api.list(&ListParams::default()).await.ok()?;
        let running = items
            .iter()
            .filter(|i| i.status.as_ref().is_some_and(|s| s.phase == Phase::Running))
            .count();
        (running == 2).then_some(())
    })
    .await;
    for port in [base, base + 1] {
        let answer = eventually(
            &format!("HTTP on port {port}"),
            Duration::from_secs(30),
            || async move { http_get(port) },
        )
        .await;
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    }
    let (items, _) = api.list(&ListParams::default()).await.unwrap();
    let logs = eventually(
        "the request in the logs",
        Duration::from_secs(30),
        || async {
            let out = e2e::oakctl(
                &kubeconfig,
                &["logs", &items[0].metadata.name, "--tail", "5"],
            );
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("\"GET / HTTP/1.0\" 200").then_some(text)
        },
    )
    .await;
    assert!(logs.lines().count() <= 5, "{logs}");

    // Followed (`oakctl logs -f`, through the root, the cluster and the agent): a request
    // made after it started shows up while it runs.
    let mut command = std::process::Command::new(e2e::binary("oakctl"));
    command
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["logs", "-f", "--tail", "1", &items[0].metadata.name])
        .stdout(std::process::Stdio::piped());
    let mut follower = KillOnDrop(command.spawn().expect("run oakctl logs -f"));
    let stdout = follower.0.stdout.take().expect("piped");
    let (lines, arrived) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let tail = arrived
        .recv_timeout(Duration::from_secs(30))
        .expect("the tail line");
    assert!(tail.contains("GET / HTTP/1.0"), "{tail}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let followed = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no new request in the followed log"
        );
        for port in [base, base + 1] {
            http_get(port);
        }
        match arrived.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => break line,
            Err(_) => continue,
        }
    };
    assert!(followed.contains("GET / HTTP/1.0"), "{followed}");
    drop(follower);

    // The agent's metrics, found through the Node in the cluster API.
    let cluster_pki = data.join("cluster").join("pki");
    let cluster = e2e::tier_client(&e2e::tier_kubeconfig(&data.join("cluster")));
    assert_eq!(cluster.base(), format!("https://127.0.0.1:{cluster_port}"));
    let node = cluster.api::<crds::Node>(None).get("local").await.unwrap();
    let agent = Client::with_tls(
        &node.status.unwrap().agent_endpoint.unwrap(),
        agent_tls(&cluster_pki, "local"),
    )
    .unwrap();
    let metrics = agent.get_text("/metrics").await.unwrap();
    assert!(metrics.contains("oakestra_agent_instances 2"), "{metrics}");
    assert!(
        metrics.contains("oakestra_agent_starts_total 2"),
        "{metrics}"
    );
}
