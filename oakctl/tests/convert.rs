//! `oakctl convert` and SLA import through the built binary: small SLAs written here,
//! and every real Oakestra SLA in `../shared/oakestra-slas/` when that directory is
//! there (CI's clean clone may not have it: that test then says so and passes).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Run `oakctl args…` with `stdin`, away from any kubeconfig or config file of the
/// machine.
fn oakctl(args: &[&str], stdin: &str) -> Output {
    let home = tempfile::tempdir().expect("a temporary directory");
    let mut child = Command::new(env!("CARGO_BIN_EXE_oakctl"))
        .args(args)
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("none"))
        .env_remove("OAKCTL_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oakctl runs");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("stdin written");
    }
    child.wait_with_output().expect("oakctl ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SLA: &str = r#"{
  "sla_version": "v2.0", "customerID": "Admin",
  "applications": [{
    "applicationID": "", "application_name": "Shop", "application_namespace": "demo",
    "application_desc": "two services",
    "microservices": [
      {"microserviceID": "", "microservice_name": "web", "microservice_namespace": "demo",
       "virtualization": "container", "code": "docker.io/library/nginx:latest",
       "vcpus": 1, "memory": 100, "port": "8080:80", "addresses": {"rr_ip": "10.30.0.10"}},
      {"microserviceID": "", "microservice_name": "Batch", "microservice_namespace": "demo",
       "virtualization": "docker", "code": "docker.io/library/busybox", "one_shot": true,
       "cmd": ["sh", "-c", "echo done"], "environment": ["MODE=once"], "vtpus": 2}
    ]
  }]
}"#;

#[test]
fn convert_prints_the_manifests_of_an_sla() {
    let out = oakctl(&["convert", "-f", "-"], SLA);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let docs: Vec<serde_json::Value> = yaml
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| yaml_serde::from_str(d).expect("each document is YAML"))
        .collect();
    let kinds: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default(),
                d["metadata"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(kinds[0], ("Namespace", "demo"), "{yaml}");
    assert_eq!(kinds[1], ("Service", "web"), "{yaml}");
    assert_eq!(kinds[2].0, "Service", "{yaml}");
    assert!(
        kinds[2].1.starts_with("batch-"),
        "mixed case gets a suffix: {yaml}"
    );
    let web = &docs[1]["spec"];
    assert_eq!(web["addressing"]["roundRobinIP"], "10.30.0.10");
    assert_eq!(web["template"]["ports"][0]["hostPort"], 8080);
    assert_eq!(web["template"]["resources"]["cpuMillicores"], 1000);
    let batch = &docs[2];
    assert_eq!(batch["spec"]["template"]["restartPolicy"], "Never");
    assert_eq!(
        batch["metadata"]["labels"]["oakestra.io/microservice"],
        "Batch"
    );
    assert_eq!(
        batch["metadata"]["annotations"]["oakestra.io/job-name"],
        "Shop.demo.Batch.demo"
    );
    assert_eq!(
        batch["metadata"]["annotations"]["oakestra.io/sla-extra"],
        r#"{"vtpus":2}"#
    );
}

#[test]
fn a_refused_sla_is_neither_converted_nor_applied() {
    let bad = SLA.replace("\"container\"", "\"unikernel\"");
    let out = oakctl(&["convert", "-f", "-"], &bad);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains(
            "-: application \"Shop\", microservice \"web\": virtualization \"unikernel\" is not supported (supported: container, docker)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was converted"), "{stderr}");

    // No server listens there: a refusal before any request exits 2, not 3.
    let server = format!("http://127.0.0.1:{}", e2e::free_port());
    let out = oakctl(&["apply", "--server", &server, "-f", "-"], &bad);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nothing was applied"), "{stderr}");
    // A good SLA is read as manifests and goes on to the (absent) server.
    let out = oakctl(&["apply", "--server", &server, "-f", "-"], SLA);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn the_service_range_is_a_flag() {
    let outside = SLA.replace("10.30.0.10", "192.168.1.10");
    let out = oakctl(&["convert", "-f", "-"], &outside);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr)
        .contains("addresses.rr_ip 192.168.1.10 is outside the service range 10.30.0.0/16"));
    let out = oakctl(
        &["convert", "--service-cidr", "192.168.0.0/16", "-f", "-"],
        &outside,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The real SLAs beside the project, if they are there.
fn shared_slas() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/oakestra-slas");
    dir.is_dir().then_some(dir)
}

#[test]
fn every_real_oakestra_sla_converts_or_is_refused_as_oakestra_would() {
    let Some(dir) = shared_slas() else {
        println!("../shared/oakestra-slas is not there: skipped");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the directory reads")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no SLA in {}", dir.display());
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let path = file.to_string_lossy();
        let out = oakctl(&["convert", "-f", &path], "");
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        if name == "sla_correct_1.json" {
            // Oakestra's root refuses its rr_ip 192.168.178.4 as well.
            assert_eq!(out.status.code(), Some(2), "{name}: {stdout}");
            assert!(
                stderr.contains("application \"ExampleApplication33\", microservice \"MicroA4\": addresses.rr_ip 192.168.178.4"),
                "{name}: {stderr}"
            );
            println!(
                "{name}: refused: {}",
                stderr.lines().next().unwrap_or_default()
            );
            continue;
        }
        assert!(out.status.success(), "{name}: {stderr}");
        let objects: Vec<String> = stdout
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| {
                let v: serde_json::Value = yaml_serde::from_str(d).expect("YAML");
                format!(
                    "{} {}",
                    v["kind"].as_str().unwrap_or_default(),
                    v["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect();
        println!("{name}: {}", objects.join(", "));
    }
}
