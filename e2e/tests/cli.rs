//! `oakctl` and `kubectl` against a real `oakestra root`, run as a user runs them: with
//! the root's admin kubeconfig exported.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use client::kubeconfig::{Kubeconfig, NamedCluster, NamedContext};
use e2e::RootServer;

/// An address of the API server where nothing listens.
const NOWHERE: &str = "https://127.0.0.1:1";

struct Cli {
    /// The kubeconfig exported (`KUBECONFIG`).
    kubeconfig: PathBuf,
    config: tempfile::TempDir,
}

impl Cli {
    fn oakctl(&self, args: &[&str]) -> Output {
        self.oakctl_stdin(args, None)
    }

    /// `oakctl ARGS` with the kubeconfig exported and oakctl's own config file in a
    /// directory of the test.
    fn oakctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(e2e::binary("oakctl"));
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("OAKCTL_CONFIG", self.config.path().join("config.yaml"))
            .current_dir(e2e::workspace_root());
        cmd
    }

    fn oakctl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.oakctl_command(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run oakctl");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// oakctl with the kubeconfig's credential, but `--server` where nothing listens.
    fn unreachable(&self) -> Output {
        self.oakctl(&["--server", NOWHERE, "get", "svc"])
    }

    /// `kubectl --kubeconfig …`, in the workspace root.
    fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .current_dir(e2e::workspace_root());
        cmd
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command()
            .args(args)
            .output()
            .expect("kubectl is installed on these machines")
    }
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "command should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn start(dir: &Path) -> (RootServer, Cli) {
    let server = RootServer::start_with(
        &format!("embedded:{}", dir.join("store").display()),
        dir,
        &["--no-controllers"],
    );
    let cli = Cli {
        kubeconfig: server.kubeconfig(),
        config: tempfile::tempdir().unwrap(),
    };
    (server, cli)
}

#[test]
fn oakctl_apply_get_describe_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = start(dir.path());

    let out = ok(cli.oakctl(&["apply", "-f", "manifests/"]));
    assert_eq!(
        out,
        "namespace/demo created\ncluster/munich-1 created\ncluster/berlin-1 created\nservice/web created\nservice/hello created\n"
    );
    let again = ok(cli.oakctl(&["apply", "-f", "manifests/"]));
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");

    let table = ok(cli.oakctl(&["get", "svc", "-n", "demo"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME    RUNTIME   REPLICAS   READY    SERVICE-IP   AGE"),
        "{table}"
    );
    assert!(lines[1].starts_with("hello   process   1"), "{table}");
    assert!(lines[2].starts_with("web     process   2"), "{table}");
    let all = ok(cli.oakctl(&["get", "services", "-A", "-l", "app=web"]));
    assert_eq!(all.lines().count(), 2, "{all}");
    assert!(
        all.lines().nth(1).unwrap().starts_with("demo        web"),
        "{all}"
    );
    let yaml = ok(cli.oakctl(&["get", "svc", "web", "-n", "demo", "-o", "yaml"]));
    assert!(yaml.contains("executable: /bin/sh"), "{yaml}");
    let names = ok(cli.oakctl(&["get", "cl", "-o", "name"]));
    assert_eq!(names, "cluster/berlin-1\ncluster/munich-1\n");

    // A changed manifest from stdin is configured.
    let changed = std::fs::read_to_string(e2e::workspace_root().join("manifests/services.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 3");
    let out = ok(cli.oakctl_stdin(&["apply", "-f", "-"], Some(&changed)));
    assert!(out.contains("service/web configured"), "{out}");

    let described = ok(cli.oakctl(&["describe", "svc", "web", "-n", "demo"]));
    for needle in [
        "Name:             web",
        "Namespace:        demo",
        "Generation:       2",
        "replicas: 3",
        "Conditions:",
        "Events:",
    ] {
        assert!(
            described.contains(needle),
            "{needle:?} missing from:\n{described}"
        );
    }

    let out = ok(cli.oakctl(&["delete", "-f", "manifests/services.yaml", "--wait"]));
    assert!(out.contains("service \"web\" deleted"), "{out}");
    let err = fails(cli.oakctl(&["get", "svc", "web", "-n", "demo"]));
    assert_eq!(err, "error: services \"web\" not found\n");

    // The container example of the README is a valid Service.
    let out = ok(cli.oakctl(&["apply", "-f", "examples/web-container.yaml"]));
    assert_eq!(out, "service/nginx created\n");
}

/// An Oakestra SLA of one application with one container microservice `web`.
fn sla(image: &str, vcpus: f64) -> String {
    serde_json::json!({
        "sla_version": "v2.0", "customerID": "Admin",
        "applications": [{
            "applicationID": "", "application_name": "shop", "application_namespace": "demo",
            "application_desc": "", "microservices": [{
                "microserviceID": "", "microservice_name": "web", "microservice_namespace": "demo",
                "virtualization": "container", "code": image, "vcpus": vcpus, "memory": 100,
                "port": "8080:80"}]}]
    })
    .to_string()
}

#[test]
fn an_sla_imported_again_with_a_change_updates_its_service() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = start(dir.path());
    let file = dir.path().join("shop.json");
    std::fs::write(&file, sla("docker.io/library/nginx:1.27", 1.0)).unwrap();
    let file = file.to_str().unwrap();

    let out = ok(cli.oakctl(&["apply", "-f", file]));
    assert!(out.contains("service/web created"), "{out}");
    let again = ok(cli.oakctl(&["apply", "-f", file]));
    assert!(again.contains("service/web unchanged"), "{again}");

    // The same file with another image and more CPU: the Service is configured (its
    // template changes, which the service controller rolls out), not refused or added.
    std::fs::write(file, sla("docker.io/library/nginx:1.28", 2.0)).unwrap();
    let out = ok(cli.oakctl(&["apply", "-f", file]));
    assert!(out.contains("service/web configured"), "{out}");
    let yaml = ok(cli.oakctl(&["get", "svc", "web", "-n", "demo", "-o", "yaml"]));
    assert!(
        yaml.contains("image: docker.io/library/nginx:1.28"),
        "{yaml}"
    );
    assert!(yaml.contains("cpuMillicores: 2000"), "{yaml}");
    assert!(yaml.contains("generation: 2"), "{yaml}");
    let names = ok(cli.oakctl(&["get", "svc", "-n", "demo", "-o", "name"]));
    assert_eq!(names, "service/web\n", "one Service, not a second one");
}

#[test]
fn oakctl_bad_input_is_refused_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = start(dir.path());
    let good = "apiVersion: oakestra.io/v1\nkind: Cluster\nmetadata: {name: fine}\nspec: {}\n";
    let cases = [
        (
            format!("{good}---\napiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  replicas: -1\n  template: {{image: x}}\n"),
            "bad.yaml: document 2 (Service web)",
            "document 2: Service \"web\" is invalid: spec.replicas: must be >= 0",
        ),
        (format!("{good}---\nkind: Cluster\nmetadata: [oops\n"), "bad.yaml", "document 2: invalid YAML at line 8"),
        (format!("{good}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n"), "bad.yaml", "unknown kind \"Deployment\""),
        (
            format!("{good}---\napiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  template: {{image: x, cpus: 2}}\n"),
            "bad.yaml",
            "spec.template.cpus: unknown field",
        ),
    ];
    for (text, _, expected) in &cases {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, text).unwrap();
        let err = fails(cli.oakctl(&["apply", "-f", path.to_str().unwrap()]));
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
        assert!(err.contains("bad.yaml"), "the file is named:\n{err}");
        assert!(err.contains("nothing was applied"), "{err}");
    }
    let listed = cli.oakctl(&["get", "clusters"]);
    assert!(
        ok(listed).is_empty(),
        "the valid document of an invalid file was not applied"
    );

    let err = fails(cli.oakctl(&["get", "widgets"]));
    assert!(err.starts_with("error: unknown kind \"widgets\""), "{err}");
    let err = fails(cli.unreachable());
    assert!(
        err.contains(&format!("cannot reach the API server at {NOWHERE}")),
        "{err}"
    );
}

/// The kubeconfig of `admin` (one context) with the contexts `edge` (its cluster and
/// user, namespace `kube`, the current one) and `nowhere` (its user at [`NOWHERE`]),
/// written to `path`.
fn two_contexts(admin: &Path, path: &Path) {
    let mut config = Kubeconfig::load(admin).unwrap();
    let (cluster, user) = {
        let context = &config.contexts[0].context;
        (context.cluster.clone(), context.user.clone())
    };
    let mut nowhere = config.clusters[0].cluster.clone();
    nowhere.server = Some(NOWHERE.into());
    config.clusters.push(NamedCluster {
        name: "nowhere".into(),
        cluster: nowhere,
    });
    let context = |name: &str, cluster: &str, namespace: Option<&str>| NamedContext {
        name: name.into(),
        context: client::kubeconfig::Context {
            cluster: cluster.into(),
            user: user.clone(),
            namespace: namespace.map(String::from),
        },
    };
    config.contexts = vec![
        context("edge", &cluster, Some("kube")),
        context("nowhere", "nowhere", None),
    ];
    config.current_context = Some("edge".into());
    config.save(path).unwrap();
}

#[test]
fn oakctl_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = start(dir.path());
    // Contexts of a kubeconfig: the current one is used, `--context` picks another.
    let contexts = Cli {
        kubeconfig: dir.path().join("contexts.kubeconfig"),
        config: tempfile::tempdir().unwrap(),
    };
    two_contexts(&server.kubeconfig(), &contexts.kubeconfig);
    let out = ok(contexts.oakctl(&["get", "ns"]));
    assert!(
        out.contains("default"),
        "the current context (edge) is used: {out}"
    );
    ok(contexts.kubectl(&["config", "use-context", "nowhere"]));
    assert!(fails(contexts.oakctl(&["get", "ns"])).contains("127.0.0.1:1"));
    assert!(ok(contexts.oakctl(&["--context", "edge", "get", "ns"])).contains("default"));

    // oakctl's own contexts (a server and a namespace, no credential) when no
    // kubeconfig is found: the first one set is current, `config use-context` switches,
    // `--context` picks; which server each reached is in its error.
    let no_kubeconfig = |args: &[&str]| {
        Command::new(e2e::binary("oakctl"))
            .args(args)
            .env_remove("OAKCTL_SERVER")
            .env_remove("KUBECONFIG")
            .env_remove("OAKESTRA_DATA")
            .env("HOME", cli.config.path())
            .env("OAKCTL_CONFIG", cli.config.path().join("config.yaml"))
            .output()
            .unwrap()
    };
    for (name, server) in [
        ("first", "http://127.0.0.1:1"),
        ("second", "http://127.0.0.1:2"),
    ] {
        ok(no_kubeconfig(&[
            "config",
            "set-context",
            name,
            "--server",
            server,
            "--namespace",
            "kube",
        ]));
    }
    assert!(fails(no_kubeconfig(&["get", "ns"])).contains("127.0.0.1:1"));
    ok(no_kubeconfig(&["config", "use-context", "second"]));
    assert!(fails(no_kubeconfig(&["get", "ns"])).contains("127.0.0.1:2"));
    assert!(fails(no_kubeconfig(&["--context", "first", "get", "ns"])).contains("127.0.0.1:1"));
}

#[test]
fn kubectl_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = start(dir.path());
    let out = ok(cli.kubectl(&["apply", "-f", "manifests/clusters.yaml"]));
    assert_eq!(
        out,
        "cluster.oakestra.io/munich-1 created\ncluster.oakestra.io/berlin-1 created\n"
    );
    let out = ok(cli.kubectl(&["apply", "-f", "manifests/clusters.yaml"]));
    assert_eq!(
        out,
        "cluster.oakestra.io/munich-1 unchanged\ncluster.oakestra.io/berlin-1 unchanged\n"
    );
    let out = ok(cli.kubectl(&["apply", "-f", "manifests/services.yaml"]));
    assert!(out.contains("service.oakestra.io/web created"), "{out}");

    let table = ok(cli.kubectl(&["get", "clusters"]));
    assert!(table.starts_with("NAME       READY    SUBNET"), "{table}");
    assert!(table.contains("munich-1"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&ok(
        cli.kubectl(&["get", "svc", "-n", "demo", "web", "-o", "json"])
    ))
    .unwrap();
    assert_eq!(json["spec"]["replicas"], 2);
    let names = ok(cli.kubectl(&["get", "svc", "-A", "-o", "name"]));
    assert_eq!(
        names,
        "service.oakestra.io/hello\nservice.oakestra.io/web\n"
    );

    // get -w prints a change made by someone else.
    let mut watch = cli
        .kubectl_command()
        .args(["get", "clusters", "-w", "--request-timeout=0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // The initial list: header and two clusters.
    for _ in 0..3 {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("initial rows");
    }
    ok(cli.kubectl(&["label", "cluster", "munich-1", "tier=gold"]));
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a row for the change");
    assert!(line.starts_with("munich-1"), "{line}");
    let _ = watch.kill();
    let _ = watch.wait();

    // Patch types as kube-apiserver takes them for custom resources: JSON patch and
    // merge patch, not strategic merge patch (a 415 naming what is accepted); a core
    // Namespace still takes kubectl's strategic patch of `label`.
    let json_patch = r#"[{"op": "replace", "path": "/spec/replicas", "value": 3}]"#;
    ok(cli.kubectl(&[
        "patch",
        "svc",
        "web",
        "-n",
        "demo",
        "--type=json",
        "-p",
        json_patch,
    ]));
    let replicas = ok(cli.kubectl(&[
        "get",
        "svc",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.replicas}",
    ]));
    assert_eq!(replicas, "3");
    let err = fails(cli.kubectl(&[
        "patch",
        "svc",
        "web",
        "-n",
        "demo",
        "--type=strategic",
        "-p",
        r#"{"spec": {"replicas": 4}}"#,
    ]));
    assert!(
        err.contains("is not supported by oakestra.io/v1, Kind=Service")
            && err.contains("accepted media types include: application/json-patch+json"),
        "{err}"
    );
    ok(cli.kubectl(&["label", "namespace", "demo", "team=edge"]));

    let bad = "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {name: bad, namespace: demo}\nspec: {replicas: -1, template: {image: x}}\n";
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, bad).unwrap();
    let err = fails(cli.kubectl(&["apply", "-f", path.to_str().unwrap()]));
    assert!(err.contains("spec.replicas: must be >= 0"), "{err}");

    let out = ok(cli.kubectl(&["delete", "cluster", "munich-1"]));
    assert_eq!(out, "cluster.oakestra.io \"munich-1\" deleted\n");
    let err = fails(cli.kubectl(&["get", "cluster", "munich-1"]));
    assert!(err.contains("clusters \"munich-1\" not found"), "{err}");
}

/// Issue #18: `kubectl diff` and server-side dry runs must change nothing. They once
/// did (the server ignored `dryRun`): a diff stored the replicas it showed.
#[test]
fn kubectl_dry_runs_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = start(dir.path());
    let svc = |name: &str, replicas: u32| {
        let path = dir.path().join(format!("{name}-{replicas}.yaml"));
        std::fs::write(
            &path,
            format!("apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{replicas: {replicas}, template: {{image: localhost:5000/busybox:1}}}}\n"),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let stored = || -> serde_json::Value {
        serde_json::from_str(&ok(cli.kubectl(&["get", "svc", "web", "-o", "json"]))).unwrap()
    };
    let (two, five) = (svc("web", 2), svc("web", 5));
    ok(cli.kubectl(&["apply", "-f", &two]));
    let before = stored();
    assert_eq!(before["spec"]["replicas"], 2);

    // kubectl diff exits 1 when there is a difference; it shows the dry run's answer.
    let diff = cli.kubectl(&["diff", "-f", &five]);
    let shown = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(
        diff.status.code(),
        Some(1),
        "{shown}\n{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(shown.contains("replicas"), "{shown}");
    let out = ok(cli.kubectl(&["apply", "--dry-run=server", "-f", &five]));
    assert!(out.contains("(server dry run)"), "{out}");
    let new = svc("fresh", 1);
    let out = ok(cli.kubectl(&["create", "--dry-run=server", "-f", &new]));
    assert!(out.contains("fresh created (server dry run)"), "{out}");
    let out = ok(cli.kubectl(&["delete", "--dry-run=server", "-f", &two]));
    assert!(out.contains("(server dry run)"), "{out}");

    let after = stored();
    assert_eq!(after["spec"]["replicas"], 2, "{after}");
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    let err = fails(cli.kubectl(&["get", "svc", "fresh"]));
    assert!(err.contains("services \"fresh\" not found"), "{err}");
}

/// The exit code of a failed command and its stderr.
/// Issue #18: `kubectl apply --server-side` as against kube-apiserver: created, a
/// re-apply writes nothing, another manager's change of a field is a conflict until
/// forced, and a client-side apply migrates to server-side apply.
#[test]
fn kubectl_server_side_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = start(dir.path());
    let manifest = |name: &str, replicas: u32| {
        let text = format!(
            "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  replicas: {replicas}\n  template: {{image: x, ports: [{{containerPort: 80}}]}}\n"
        );
        let path = dir.path().join(format!("{name}-{replicas}.yaml"));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let get = |name: &str, jsonpath: &str| {
        ok(cli.kubectl(&["get", "svc", name, "-o", &format!("jsonpath={jsonpath}")]))
    };
    let a = manifest("ssa", 2);
    let out = ok(cli.kubectl(&["apply", "--server-side", "-f", &a]));
    assert_eq!(out, "service.oakestra.io/ssa serverside-applied\n");
    let version = get("ssa", "{.metadata.resourceVersion}");
    ok(cli.kubectl(&["apply", "--server-side", "-f", &a]));
    assert_eq!(
        get("ssa", "{.metadata.resourceVersion}"),
        version,
        "an unchanged re-apply writes nothing"
    );

    let b = manifest("ssa", 3);
    let err = fails(cli.kubectl(&["apply", "--server-side", "--field-manager=b", "-f", &b]));
    assert!(
        err.contains("conflict with \"kubectl\"") && err.contains(".spec.replicas"),
        "{err}"
    );
    assert_eq!(get("ssa", "{.spec.replicas}"), "2");
    ok(cli.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=b",
        "--force-conflicts",
        "-f",
        &b,
    ]));
    assert_eq!(get("ssa", "{.spec.replicas}"), "3");
    let shown = ok(cli.kubectl(&["get", "svc", "ssa", "--show-managed-fields", "-o", "yaml"]));
    assert!(shown.contains("manager: b"), "{shown}");
    assert!(shown.contains("operation: Apply"), "{shown}");

    // Client-side apply, then server-side: kubectl migrates the ownership with a JSON
    // patch of managedFields, and the server-side apply goes through.
    let c = manifest("csa", 1);
    ok(cli.kubectl(&["apply", "-f", &c]));
    let managers = get("csa", "{.metadata.managedFields[*].manager}");
    assert_eq!(managers, "kubectl-client-side-apply");
    let c2 = manifest("csa", 4);
    ok(cli.kubectl(&["apply", "--server-side", "-f", &c2]));
    assert_eq!(get("csa", "{.spec.replicas}"), "4");
    let entries = get(
        "csa",
        "{range .metadata.managedFields[*]}{.manager}:{.operation} {end}",
    );
    assert!(entries.contains("kubectl:Apply"), "{entries}");
    assert!(
        !entries.contains("kubectl-client-side-apply"),
        "migrated to kubectl's Apply entry: {entries}"
    );
}

fn fails_with(out: Output) -> (i32, String) {
    let code = out.status.code().expect("oakctl exits, not killed");
    (code, fails(out))
}

#[test]
fn oakctl_exit_codes_tell_failures_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = start(dir.path());
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {name: web}\nspec: {replicas: -1, template: {image: x}}\n",
    )
    .unwrap();
    let unreachable = format!("cannot reach the API server at {NOWHERE}");
    let cases: [(&str, Output, i32, &str); 9] = [
        (
            "the API refuses",
            cli.oakctl(&["delete", "namespace", "default"]),
            1,
            "the default namespace cannot be deleted",
        ),
        (
            "clap's usage error",
            cli.oakctl(&["get"]),
            2,
            "required arguments were not provided",
        ),
        (
            "an unknown kind",
            cli.oakctl(&["get", "widgets"]),
            2,
            "unknown kind \"widgets\"",
        ),
        (
            "an invalid manifest",
            cli.oakctl(&["apply", "-f", bad.to_str().unwrap()]),
            2,
            "nothing was applied",
        ),
        (
            "a client-side dry run",
            cli.oakctl(&["apply", "--dry-run=client", "-f", bad.to_str().unwrap()]),
            2,
            "--dry-run=client is not supported",
        ),
        (
            "--prune without a selector",
            cli.oakctl(&["apply", "--prune", "-f", bad.to_str().unwrap()]),
            2,
            "--selector <SELECTOR>",
        ),
        (
            "diff of an invalid manifest",
            cli.oakctl(&["diff", "-f", bad.to_str().unwrap()]),
            2,
            "spec.replicas: must be >= 0",
        ),
        ("no server", cli.unreachable(), 3, &unreachable),
        (
            "not found",
            cli.oakctl(&["get", "svc", "nothere"]),
            4,
            "error: services \"nothere\" not found",
        ),
    ];
    for (what, out, expected, needle) in cases {
        let (code, err) = fails_with(out);
        assert_eq!(code, expected, "{what}: {err}");
        assert!(
            err.contains(needle),
            "{what}: {needle:?} missing from {err}"
        );
    }
    // Deleting several missing objects is "not found" too; a missing one among other
    // failures is not.
    let (code, err) = fails_with(cli.oakctl(&["delete", "svc", "a", "b"]));
    assert_eq!(code, 4, "{err}");
    let (code, err) = fails_with(cli.oakctl(&["delete", "ns", "default", "nothere"]));
    assert_eq!(code, 1, "{err}");
    // The codes are documented.
    let help = ok(cli.oakctl(&["--help"]));
    for line in [
        "0  done",
        "1  the API server refused",
        "2  usage",
        "3  the API server",
        "4  an object",
    ] {
        assert!(help.contains(line), "{line:?} missing from --help:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oakctl_delete_wait_returns_once_the_object_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = start(dir.path());
    let held = "apiVersion: oakestra.io/v1\nkind: Cluster\nmetadata: {name: held, finalizers: [example.com/hold]}\nspec: {}\n";
    ok(cli.oakctl_stdin(&["apply", "-f", "-"], Some(held)));
    let clusters =
        e2e::tier_client(&cli.kubeconfig).dynamic(crds::kind_by_name("clusters").unwrap(), None);

    // A finalizer keeps it: --wait gives up after its timeout, with exit code 1.
    let (code, err) =
        fails_with(cli.oakctl(&["delete", "cluster", "held", "--wait", "--timeout", "1"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cluster/held still exists after 1s (finalizers: [\"example.com/hold\"])"),
        "{err}"
    );

    let mut waiting = cli
        .oakctl_command(&["delete", "cluster", "held", "--wait", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it waits, it stays waiting while the finalizer holds the object.
    let stderr = waiting.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("oakctl says it waits");
    assert_eq!(line, "waiting for cluster/held to be gone…");
    assert!(
        clusters.get_opt("held").await.unwrap().is_some(),
        "the finalizer holds it"
    );
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "delete --wait returned while the object still existed"
    );
    clusters
        .patch(
            "held",
            &serde_json::json!({"metadata": {"finalizers": null}}),
        )
        .await
        .unwrap();
    let status = e2e::eventually("delete --wait to return", Duration::from_secs(20), || {
        let done = waiting.try_wait().unwrap();
        async move { done }
    })
    .await;
    let out = waiting.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cluster \"held\" deleted\n"
    );
    assert!(clusters.get_opt("held").await.unwrap().is_none());
}

/// Issue #18: `oakctl apply` is one server-side apply per object under its field
/// manager, `oakctl diff` shows what an apply would change with kubectl's exit codes,
/// and `--prune -l` deletes what this manager applied and the manifests dropped.
#[test]
fn oakctl_server_side_apply_diff_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = start(dir.path());
    let svc = |name: &str, labels: &str, replicas: u32| {
        format!(
            "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, labels: {{{labels}}}}}\nspec: {{replicas: {replicas}, template: {{image: localhost:5000/busybox:1}}}}\n"
        )
    };
    let write = |file: &str, docs: &[String]| {
        let path = dir.path().join(file);
        std::fs::write(&path, docs.join("---\n")).unwrap();
        path.to_str().unwrap().to_string()
    };
    let get = |name: &str| -> serde_json::Value {
        serde_json::from_str(&ok(cli.oakctl(&["get", "svc", name, "-o", "json"]))).unwrap()
    };
    let version = || get("web")["metadata"]["resourceVersion"].clone();

    // Create, then re-apply: unchanged, and nothing was written.
    let all = write(
        "all.yaml",
        &[
            svc("web", "app: x", 2),
            svc("old", "app: x", 1),
            svc("keep", "tier: y", 1),
        ],
    );
    assert_eq!(
        ok(cli.oakctl(&["apply", "-f", &all])),
        "service/web created\nservice/old created\nservice/keep created\n"
    );
    let before = version();
    assert_eq!(
        ok(cli.oakctl(&["apply", "--server-side", "-f", &all])),
        "service/web unchanged\nservice/old unchanged\nservice/keep unchanged\n"
    );
    assert_eq!(version(), before);

    // diff: 0 and nothing printed when nothing would change, 1 and the change when
    // something would; neither it nor a server dry run writes.
    let out = cli.oakctl(&["diff", "-f", &all]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let three = write("web-3.yaml", &[svc("web", "app: x", 3)]);
    let out = cli.oakctl(&["diff", "-f", &three]);
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "--- Service default/web (live)\n+++ Service default/web (applied)\n",
        "\n-  replicas: 2\n+  replicas: 3\n",
    ] {
        assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
    }
    assert!(
        !shown.contains("resourceVersion") && !shown.contains("managedFields"),
        "{shown}"
    );
    assert_eq!(
        ok(cli.oakctl(&["apply", "--dry-run=server", "-f", &three])),
        "service/web configured (dry run)\n"
    );
    assert_eq!(version(), before, "diff and --dry-run=server wrote nothing");

    // Another manager changing a field oakctl applied is a conflict (exit 1, naming the
    // field, its manager and the way out) until it forces.
    let five = write("web-5.yaml", &[svc("web", "app: x", 5)]);
    let (code, err) = fails_with(cli.oakctl(&["apply", "--field-manager", "ci", "-f", &five]));
    assert_eq!(code, 1, "{err}");
    for needle in [
        r#"conflict with "oakctl""#,
        ".spec.replicas",
        "--force-conflicts",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
    assert_eq!(get("web")["spec"]["replicas"], 2);
    assert_eq!(
        ok(cli.oakctl(&[
            "apply",
            "--field-manager",
            "ci",
            "--force-conflicts",
            "-f",
            &five
        ])),
        "service/web configured\n"
    );
    let web = get("web");
    assert_eq!(web["spec"]["replicas"], 5);
    let managers: Vec<&str> = web["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["manager"].as_str())
        .collect();
    assert!(managers.contains(&"ci"), "{web}");

    // --prune -l app=x: `old` was dropped and goes; `keep` does not match (tier=y); `stranger`
    // matches but was created by another tool, not applied by oakctl.
    let stranger = write("stranger.yaml", &[svc("stranger", "app: x", 1)]);
    ok(cli.kubectl(&["create", "-f", &stranger]));
    let web_only = write("web.yaml", &[svc("web", "app: x", 5)]);
    let out = ok(cli.oakctl(&[
        "apply",
        "--prune",
        "-l",
        "app=x",
        "--dry-run=server",
        "-f",
        &web_only,
    ]));
    assert!(out.contains("service/old pruned (dry run)\n"), "{out}");
    get("old");
    let out = ok(cli.oakctl(&["apply", "--prune", "-l", "app=x", "-f", &web_only]));
    assert!(out.starts_with("service/web "), "{out}");
    assert!(out.ends_with("service/old pruned\n"), "{out}");
    assert!(!out.contains("stranger") && !out.contains("keep"), "{out}");
    let err = fails(cli.oakctl(&["get", "svc", "old"]));
    assert!(err.contains("services \"old\" not found"), "{err}");
    get("keep");
    get("stranger");
}

/// `ConfigMap`s and Secrets as kubectl users handle them, and `kubectl apply --prune
/// --applyset` with a `ConfigMap` as the set's parent: a Service left out of the set's
/// files is deleted, one outside the set is not.
#[test]
fn kubectl_configmaps_secrets_and_applysets() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = start(dir.path());

    // A Secret from literals: stored base64-encoded, its values never in a table.
    ok(cli.kubectl(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=s3cret",
        "--from-literal=user=admin",
    ]));
    let table = ok(cli.kubectl(&["get", "secrets"]));
    assert!(table.contains("db") && table.contains("Opaque"), "{table}");
    assert!(
        !table.contains("s3cret") && !table.contains("czNjcmV0"),
        "{table}"
    );
    // Tables carry the objects' metadata only, unless kubectl needs the objects.
    let sorted = ok(cli.kubectl(&[
        "get",
        "secrets",
        "--sort-by=.metadata.name",
        "--show-labels",
    ]));
    assert!(
        sorted.contains("db") && sorted.contains("LABELS"),
        "{sorted}"
    );
    let labelled = ok(cli.kubectl(&["get", "secrets", "-L", "app", "-o", "wide"]));
    assert!(labelled.contains("APP"), "{labelled}");
    let stored = ok(cli.kubectl(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]));
    assert_eq!(stored, "czNjcmV0");
    // stringData is merged into data and never kept.
    let path = dir.path().join("secret.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: api, namespace: default}\nstringData: {token: abc}\nimmutable: true\n",
    )
    .unwrap();
    ok(cli.kubectl(&["apply", "--server-side", "-f", path.to_str().unwrap()]));
    let api = ok(cli.kubectl(&["get", "secret", "api", "-o", "json"]));
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["data"]["token"], "YWJj", "{api}");
    assert_eq!(api.get("stringData"), None, "{api}");
    // Immutable: its data cannot change.
    let err = fails(cli.kubectl(&[
        "patch",
        "secret",
        "api",
        "--type=merge",
        "-p",
        r#"{"data": {"token": "eHl6"}}"#,
    ]));
    assert!(
        err.contains("data: Invalid value")
            || err.contains("field is immutable when `immutable` is set"),
        "{err}"
    );
    // Bad input names the field.
    let err = fails(cli.kubectl(&["create", "configmap", "bad", "--from-literal=no spaces=x"]));
    assert!(err.contains("no spaces"), "{err}");
    ok(cli.kubectl(&["create", "configmap", "conf", "--from-literal=mode=fast"]));
    assert_eq!(
        ok(cli.kubectl(&["get", "cm", "conf", "-o", "jsonpath={.data.mode}"])),
        "fast"
    );
    // oakctl describe shows a ConfigMap's values, and only the sizes of a Secret's.
    let described = ok(cli.oakctl(&["describe", "cm", "conf"]));
    assert!(
        described.contains("Data:\n  mode:\n    fast\n"),
        "{described}"
    );
    let described = ok(cli.oakctl(&["describe", "secret", "db"]));
    assert!(
        described.contains("Type:             Opaque"),
        "{described}"
    );
    assert!(
        described.contains("  password: 6 bytes\n  user: 5 bytes\n"),
        "{described}"
    );
    assert!(
        !described.contains("s3cret") && !described.contains("czNjcmV0"),
        "{described}"
    );

    // An applyset whose parent is a ConfigMap.
    let svc = |name: &str| {
        format!(
            "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{replicas: 0, template: {{image: x}}}}\n"
        )
    };
    let write = |file: &str, docs: &[String]| {
        let path = dir.path().join(file);
        std::fs::write(&path, docs.join("---\n")).unwrap();
        path.to_str().unwrap().to_string()
    };
    let applyset = |file: &str| {
        let mut cmd = cli.kubectl_command();
        cmd.env("KUBECTL_APPLYSET", "true").args([
            "apply",
            "--server-side",
            "--prune",
            "--applyset=configmaps/shop",
            "-n",
            "default",
            "-f",
            file,
        ]);
        ok(cmd.output().unwrap())
    };
    ok(cli.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &write("outside.yaml", &[svc("outside")]),
    ]));
    let both = write("both.yaml", &[svc("front"), svc("back")]);
    applyset(&both);
    let parent = ok(cli.kubectl(&["get", "cm", "shop", "-o", "json"]));
    let parent: serde_json::Value = serde_json::from_str(&parent).unwrap();
    let id = parent["metadata"]["labels"]["applyset.kubernetes.io/id"]
        .as_str()
        .unwrap_or_else(|| panic!("no applyset id: {parent}"))
        .to_string();
    let members = ok(cli.kubectl(&[
        "get",
        "svc",
        "-l",
        &format!("applyset.kubernetes.io/part-of={id}"),
        "-o",
        "name",
    ]));
    assert_eq!(
        members,
        "service.oakestra.io/back\nservice.oakestra.io/front\n"
    );
    let out = applyset(&write("front.yaml", &[svc("front")]));
    assert!(out.contains("service.oakestra.io/back pruned"), "{out}");
    let names = ok(cli.kubectl(&["get", "svc", "-o", "name"]));
    assert_eq!(
        names,
        "service.oakestra.io/front\nservice.oakestra.io/outside\n"
    );
}
