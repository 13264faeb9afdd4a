//! Oakestra's own CLI (`oak`, the `oak-cli` package from the Python package index,
//! unchanged) against a real `oakestra up`: log in (its fixed Admin/Admin, over plain
//! HTTP to port 10000), create an application from a real SLA file, list applications,
//! services and clusters, deploy, scale, inspect the instances, undeploy and delete. `scripts/deps.sh`
//! installs the CLI in a virtual environment; without it (or without
//! `../shared/oakestra-slas/`) the test says so and passes.
//!
//! The CLI dials `http://SYSTEM_MANAGER_IP:10000`: the test serves `up` on port 10000
//! of a loopback address of its own (`127.X.Y.Z`), so it meets no other server there.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::containers::{Containerd, Registry};
use e2e::{eventually, plain_http, Oakestra};
use serde_json::{json, Value};

/// Oakestra's CLI, where `scripts/deps.sh` installs it (`OAKESTRA_OAK_CLI_ENV`
/// overrides), if it is there.
fn oak() -> Option<PathBuf> {
    let env = e2e::deps_env("OAKESTRA_OAK_CLI_ENV", "oak-cli")?;
    Some(env.join("bin/oak")).filter(|p| p.exists())
}

/// The real SLA files, beside the project.
fn slas() -> Option<PathBuf> {
    let dir = e2e::workspace_root().join("../shared/oakestra-slas");
    dir.is_dir().then_some(dir)
}

/// The CLI with its own home (its config names the server) and a wide terminal.
struct Cli {
    oak: PathBuf,
    home: PathBuf,
}

impl Cli {
    /// The CLI configured for the server at `server`, with the SLA file `sla` (a
    /// `NAME.json`) where it looks for SLAs.
    fn new(oak: PathBuf, home: &Path, server: Ipv4Addr, sla: &Path) -> Cli {
        let dir = home.join("oak_cli");
        std::fs::create_dir_all(dir.join("SLAs")).unwrap();
        // What `oak c` would write: the config version it reads, and the server.
        std::fs::write(
            dir.join(".oak_cli_config"),
            format!(
                "[OAK_CLI]\nconfig_version = 1\nlocal_machine_purpose = [\"initial\"]\nsystem_manager_ip = {server}\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join(".init_flag"), "").unwrap();
        // The SLA the user brings, where the CLI looks for SLA files.
        std::fs::copy(sla, dir.join("SLAs").join(sla.file_name().unwrap())).unwrap();
        Cli {
            oak,
            home: home.to_path_buf(),
        }
    }

    /// `oak ARGS…`: its output, failing the test unless it succeeds.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.oak)
            .args(args)
            .env("HOME", &self.home)
            .env("COLUMNS", "250")
            .env("TERM", "dumb")
            .env("NO_COLOR", "1")
            .output()
            .expect("run oak");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "oak {}: {text}", args.join(" "));
        println!("$ oak {}\n{text}", args.join(" "));
        text
    }
}

/// What the REST API says at `path` (the CLI's own login, over plain HTTP).
fn api(addr: SocketAddr, path: &str) -> Value {
    let (code, body) = plain_http(
        addr,
        "POST",
        "/api/auth/login",
        None,
        Some(r#"{"username":"Admin","password":"Admin"}"#),
    )
    .expect("login answered");
    assert_eq!(code, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    let (code, body) =
        plain_http(addr, "GET", path, token["token"].as_str(), None).expect("answered");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `oakestra up ARGS…` serving its root API on port 10000 of a loopback address of its
/// own, with its data in `dir`: the process and that address.
fn up_on_port_10000(dir: &Path, extra: &[&str]) -> (Oakestra, Ipv4Addr) {
    let ip = e2e::loopback_with_free_port(10000);
    let addr = SocketAddr::from((ip, 10000));
    // The cluster's port is the kernel's choice at bind time: nothing here dials it, and
    // a port picked earlier could be taken by the other test's `up` in between.
    let mut args = e2e::up_args(10000, 0, &dir.join("data"), extra);
    args[2] = addr.to_string();
    let up = Oakestra::start("up", &args, None, dir);
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "up did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (up, ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oakestras_cli_works_unchanged_against_oakestra_up() {
    let Some(oak) = oak() else {
        println!("Oakestra's CLI is not installed (scripts/deps.sh installs it): skipped");
        return;
    };
    let Some(slas) = slas() else {
        println!("../shared/oakestra-slas is not there: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_up, ip) = up_on_port_10000(dir.path(), &["--runtime", "process"]);
    let addr = SocketAddr::from((ip, 10000));
    let cli = Cli::new(oak, &dir.path().join("home"), ip, &slas.join("curl.json"));

    // Create the application of a real SLA: registered, not deployed.
    cli.run(&["application", "create", "--sla-file-name", "curl"]);
    let shown = cli.run(&["application", "show"]);
    assert!(shown.contains("clientserver"), "{shown}");
    let apps = api(addr, "/api/applications");
    let app_id = apps[0]["applicationID"].as_str().unwrap().to_string();
    assert!(shown.contains(&app_id), "{shown}");
    let services = cli.run(&["service", "show"]);
    assert!(
        services.contains("curl") && services.contains("nginx"),
        "{services}"
    );
    let of_app = cli.run(&["service", "show", &app_id]);
    assert!(of_app.contains("clientserver"), "{of_app}");

    // Deploy one instance of curl, then one more (scale).
    let all = api(addr, "/api/services/");
    let curl = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["microservice_name"] == "curl")
        .expect("curl");
    let curl_id = curl["microserviceID"].as_str().unwrap().to_string();
    let path = format!("/api/service/{curl_id}");
    cli.run(&["service", "deploy", &curl_id]);
    cli.run(&["service", "deploy", &curl_id]);
    eventually("two instances of curl", Duration::from_secs(30), || async {
        let s = api(addr, &path);
        (s["instance_list"].as_array()?.len() == 2).then_some(())
    })
    .await;
    // The CLI shows them with their status: this worker runs processes only, so the
    // container instances find no cluster (Oakestra's TargetClusterNotFound).
    let inspected = cli.run(&["service", "inspect", &curl_id]);
    assert!(inspected.contains("TargetClusterNotFound"), "{inspected}");
    let detailed = cli.run(&["service", "show", "-v", "detailed"]);
    assert!(detailed.contains("TargetClusterNotFound"), "{detailed}");
    let clusters = cli.run(&["cluster", "list"]);
    assert!(clusters.contains("local"), "{clusters}");

    // Undeploy one instance, then the service's rest.
    cli.run(&[
        "service",
        "undeploy",
        "--service-id",
        &curl_id,
        "--instance-id",
        "1",
    ]);
    assert_eq!(api(addr, &path)["replicas"], 1);
    cli.run(&["service", "undeploy", "--service-id", &curl_id]);
    assert_eq!(api(addr, &path)["replicas"], 0);

    // Delete the application: its services go with it.
    cli.run(&["application", "delete", &app_id]);
    assert_eq!(api(addr, "/api/applications"), serde_json::json!([]));
    assert_eq!(api(addr, "/api/services/"), serde_json::json!([]));
    let none = cli.run(&["application", "show"]);
    assert!(none.contains("No applications exist yet"), "{none}");
}

/// The same CLI deploys a container application for real: an SLA as a user writes it
/// (its image in a local registry, as this machine reaches no public one), created and
/// deployed in one step (`oak a c -d`), its instance `RUNNING` on the worker's
/// containerd and answering HTTP at its instance IP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oakestras_cli_deploys_a_container_application() {
    let Some(oak) = oak() else {
        println!("Oakestra's CLI is not installed (scripts/deps.sh installs it): skipped");
        return;
    };
    let _one_at_a_time = e2e::containers::exclusive().await;
    let containerd = Containerd::start();
    let registry = Registry::start();
    let image = registry.push_web("v1");
    let dir = tempfile::tempdir().unwrap();
    let socket = containerd.socket.display().to_string();
    let (_up, ip) = up_on_port_10000(dir.path(), &["--containerd-socket", &socket]);
    let addr = SocketAddr::from((ip, 10000));
    let sla = json!({"sla_version": "v2.0", "customerID": "Admin", "applications": [{
        "applicationID": "", "application_name": "website", "application_namespace": "web",
        "application_desc": "one web server", "microservices": [{
            "microserviceID": "", "microservice_name": "httpd", "microservice_namespace": "web",
            "virtualization": "container", "code": image, "memory": 32, "vcpus": 0.2,
            "vgpus": 0, "vtpus": 0, "bandwidth_in": 0, "bandwidth_out": 0, "storage": 0,
            "state": "", "port": "", "added_files": []}]}]});
    let file = dir.path().join("website.json");
    std::fs::write(&file, serde_json::to_string_pretty(&sla).unwrap()).unwrap();
    let cli = Cli::new(oak, &dir.path().join("home"), ip, &file);

    cli.run(&["application", "create", "--sla-file-name", "website", "-d"]);
    let services = api(addr, "/api/services/");
    let id = services[0]["microserviceID"].as_str().unwrap().to_string();
    let path = format!("/api/service/{id}");
    let instance_ip = eventually("httpd RUNNING", Duration::from_secs(120), || async {
        let s = api(addr, &path);
        let first = s["instance_list"].as_array()?.first()?.clone();
        (first["status"] == "RUNNING").then(|| first["instance_ip"].as_str().map(String::from))?
    })
    .await;
    let inspected = cli.run(&["service", "inspect", &id]);
    assert!(inspected.contains("RUNNING"), "{inspected}");
    let page = eventually(
        "the page from the instance",
        Duration::from_secs(30),
        || async {
            let (code, body) = plain_http(
                SocketAddr::from((instance_ip.parse::<Ipv4Addr>().ok()?, 80)),
                "GET",
                "/index.html",
                None,
                None,
            )?;
            (code == 200).then_some(body)
        },
    )
    .await;
    assert!(page.contains("v1"), "{page}");

    let app = api(addr, "/api/applications")[0]["applicationID"]
        .as_str()
        .unwrap()
        .to_string();
    cli.run(&["application", "delete", &app]);
    eventually("the container gone", Duration::from_secs(60), || async {
        let ns = "oakestra-local";
        containerd.containers(ns).is_empty().then_some(())
    })
    .await;
}
