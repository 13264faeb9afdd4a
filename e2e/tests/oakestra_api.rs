//! Oakestra's REST API on the root (`/api/...`), driven over plain HTTP and TLS against a
//! real `oakestra up` and a real `oakestra root`: every route, the error shapes, the
//! login (the generated password, Oakestra's Admin/Admin only over plain HTTP from
//! loopback and only in `up`), plain HTTP confined to Oakestra's paths, and ids that
//! survive a restart. What Oakestra's own CLI does is in `oak_cli.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use client::tls::TlsOptions;
use e2e::{eventually, free_port, plain_http, Oakestra, RootServer};
use serde_json::{json, Value};

/// A plain-HTTP request that must be answered; its status and JSON body.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let text = body.map(Value::to_string);
    let (code, answer) = plain_http(addr, method, path, token, text.as_deref())
        .unwrap_or_else(|| panic!("{method} {path}: no answer"));
    let value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("{method} {path}: {code} {answer:?} is not JSON: {e}"));
    (code, value)
}

/// Log in over TLS through `anonymous` (a client without a credential): Oakestra's
/// fixed Admin/Admin is a 401 there, the administrator's password from `data_dir` logs
/// in; the session token.
async fn tls_login(anonymous: &client::Client, data_dir: &Path) -> String {
    let err = anonymous
        .post_json(
            "/api/auth/login",
            &json!({"username": "Admin", "password": "Admin"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(401), "{err}");
    let answer = anonymous
        .post_json(
            "/api/auth/login",
            &json!({"username": "admin", "password": password(data_dir)}),
        )
        .await
        .expect("the admin password logs in over TLS");
    answer["token"].as_str().unwrap().to_string()
}

/// Like [`call`], expecting `want`; the body.
fn expect(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
    want: u16,
) -> Value {
    let (code, value) = call(addr, method, path, Some(token), body);
    assert_eq!(code, want, "{method} {path}: {value}");
    value
}

/// The `{"message": …}` of an error answer, checking its status.
fn message(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    want: u16,
) -> String {
    let (code, value) = call(addr, method, path, token, body);
    assert_eq!(code, want, "{method} {path}: {value}");
    value["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path}: no message in {value}"))
        .to_string()
}

fn login(addr: SocketAddr, user: &str, password: &str) -> (u16, Value) {
    call(
        addr,
        "POST",
        "/api/auth/login",
        None,
        Some(&json!({"username": user, "password": password})),
    )
}

/// An SLA of application `name` (namespace `ns`) with container microservices `services`.
fn sla(name: &str, ns: &str, services: &[&str]) -> Value {
    let microservices: Vec<Value> = services
        .iter()
        .map(|s| {
            json!({"microserviceID": "", "microservice_name": s, "microservice_namespace": ns,
                   "virtualization": "container", "code": "docker.io/library/nginx:latest",
                   "cmd": ["nginx", "-g", "daemon off;"], "memory": 100, "vcpus": 1, "port": "8080:80"})
        })
        .collect();
    json!({"sla_version": "v2.0", "customerID": "Admin", "applications": [{
        "applicationID": "", "application_name": name, "application_namespace": ns,
        "application_desc": "first", "microservices": microservices}]})
}

/// A TLS client of the root whose data is in `root_data`, with `token` as bearer.
fn tls_client(url: &str, root_data: &Path, token: Option<&str>) -> client::Client {
    let ca = std::fs::read_to_string(root_data.join("pki/ca.crt")).expect("the root's CA");
    client::Client::with_tls(
        url,
        TlsOptions {
            ca_pem: Some(ca),
            identity: None,
            bearer: token.map(Into::into),
            server_name: None,
        },
    )
    .unwrap()
}

fn password(root_data: &Path) -> String {
    let path = root_data.join("oakestra-api-password");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("the password file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{} is private", path.display());
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oakestras_rest_api_on_oakestra_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let api_port = free_port();
    let args = e2e::up_args(api_port, 0, &data, &["--runtime", "process"]);
    let mut up = Oakestra::start("up", &args, Some(api_port), dir.path());
    let addr: SocketAddr = ([127, 0, 0, 1], api_port).into();
    let root_data = data.join("root");

    // The login: Oakestra's fixed pair over plain HTTP from loopback, in `up`.
    let (code, tokens) = login(addr, "Admin", "Admin");
    assert_eq!(code, 200, "{tokens}");
    let plain_token = tokens["token"].as_str().unwrap().to_string();
    assert!(tokens["refresh_token"].is_string());
    let (code, _) = login(addr, "Admin", "wrong");
    assert_eq!(code, 401);
    assert_eq!(
        message(
            addr,
            "POST",
            "/api/auth/login",
            None,
            Some(&json!({"username": "admin", "password": "nope"})),
            401
        ),
        "invalid username or password"
    );
    assert_eq!(
        message(
            addr,
            "POST",
            "/api/auth/login",
            None,
            Some(&json!({"username": 4})),
            400
        ),
        "username: must be a string"
    );
    let (code, refreshed) = call(
        addr,
        "POST",
        "/api/auth/refresh",
        None,
        Some(&json!({"refresh_token": tokens["refresh_token"]})),
    );
    assert_eq!(code, 200, "{refreshed}");
    assert!(refreshed["token"].is_string());

    // Plain HTTP reaches Oakestra's paths only: Kubernetes paths stay TLS, token or not.
    for path in [
        "/api/v1/namespaces",
        "/apis/oakestra.io/v1/services",
        "/healthz",
    ] {
        let (code, body) =
            plain_http(addr, "GET", path, Some(&plain_token), None).expect("an answer");
        assert_eq!(code, 403, "plain GET {path}: {body}");
    }
    // No session: 401 in Oakestra's shape.
    assert!(message(addr, "GET", "/api/applications/", None, None, 401).contains("log in"));
    assert_eq!(
        message(
            addr,
            "GET",
            "/api/applications/",
            Some("oak.forged"),
            None,
            401
        ),
        "Unauthorized"
    );

    // Over TLS: Admin/Admin is refused, the generated password is not, and the
    // plain-only token does not work.
    let url = format!("https://127.0.0.1:{api_port}");
    let anonymous = tls_client(&url, &root_data, None);
    let tls_token = tls_login(&anonymous, &root_data).await;
    let listed = tls_client(&url, &root_data, Some(&tls_token))
        .get_json("/api/applications")
        .await
        .expect("a TLS session lists applications");
    assert_eq!(listed, json!([]));
    let err = tls_client(&url, &root_data, Some(&plain_token))
        .get_json("/api/applications")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(401), "a plain-only token over TLS: {err}");
    // The TLS token works over plain HTTP too (loopback).
    expect(addr, "GET", "/api/clusters/", &tls_token, None, 200);

    let t = plain_token.as_str();
    // Applications.
    let created = expect(
        addr,
        "POST",
        "/api/application",
        t,
        Some(&sla("shop", "shopns", &["web", "Db"])),
        200,
    );
    let apps = created.as_array().unwrap();
    assert_eq!(apps.len(), 1, "{created}");
    let app = &apps[0];
    let app_id = app["applicationID"].as_str().unwrap().to_string();
    assert_eq!(app_id.len(), 24);
    assert_eq!(app["_id"]["$oid"], app_id.as_str());
    assert_eq!(app["application_name"], "shop");
    assert_eq!(app["application_namespace"], "shopns");
    assert_eq!(app["application_desc"], "first");
    assert_eq!(app["microservices"].as_array().unwrap().len(), 2);
    assert!(message(
        addr,
        "POST",
        "/api/application/",
        Some(t),
        Some(&sla("shop", "shopns", &["web"])),
        409
    )
    .contains("exists already"));
    let mut bad = sla("bad", "badns", &["x"]);
    bad["applications"][0]["microservices"][0]["virtualization"] = json!("unikernel");
    let refused = message(addr, "POST", "/api/application/", Some(t), Some(&bad), 422);
    assert!(
        refused.contains("microservice \"x\"") && refused.contains("virtualization"),
        "{refused}"
    );
    let (code, _) = plain_http(
        addr,
        "POST",
        "/api/application/",
        Some(t),
        Some("{not json"),
    )
    .unwrap();
    assert_eq!(code, 400);
    // A second application in its own namespace, with no services.
    expect(
        addr,
        "POST",
        "/api/application/",
        t,
        Some(&sla("blank", "blankns", &[])),
        200,
    );

    let all = expect(addr, "GET", "/api/applications", t, None, 200);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["application_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["blank", "shop"]);
    assert_eq!(
        expect(addr, "GET", "/api/applications/admin", t, None, 200),
        all
    );
    assert!(message(addr, "GET", "/api/applications/bob", Some(t), None, 404).contains("bob"));
    let one = expect(
        addr,
        "GET",
        &format!("/api/application/{app_id}"),
        t,
        None,
        200,
    );
    assert_eq!(&one, app);
    message(
        addr,
        "GET",
        "/api/application/000000000000000000000000",
        Some(t),
        None,
        404,
    );
    expect(
        addr,
        "PUT",
        &format!("/api/application/{app_id}"),
        t,
        Some(&json!({"application_desc": "second"})),
        200,
    );
    assert_eq!(
        expect(
            addr,
            "GET",
            &format!("/api/application/{app_id}"),
            t,
            None,
            200
        )["application_desc"],
        "second"
    );
    message(
        addr,
        "PUT",
        &format!("/api/application/{app_id}"),
        Some(t),
        Some(&json!({"application_name": "other"})),
        422,
    );

    // Services.
    let services = expect(addr, "GET", "/api/services/", t, None, 200);
    assert_eq!(services.as_array().unwrap().len(), 2, "{services}");
    let of_app = expect(
        addr,
        "GET",
        &format!("/api/services/{app_id}"),
        t,
        None,
        200,
    );
    assert_eq!(of_app, services);
    let web = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["microservice_name"] == "web")
        .unwrap()
        .clone();
    let web_id = web["microserviceID"].as_str().unwrap().to_string();
    assert_eq!(web["applicationID"], app_id.as_str());
    assert_eq!(web["app_name"], "shop");
    assert_eq!(web["image"], "docker.io/library/nginx:latest");
    assert_eq!(web["virtualization"], "docker");
    assert_eq!(web["port"], "8080:80/tcp");
    assert_eq!(web["instance_list"], json!([]));
    assert_eq!(
        web["replicas"], 0,
        "registered, not deployed, as in Oakestra"
    );
    assert_eq!(
        expect(addr, "GET", &format!("/api/service/{web_id}"), t, None, 200)["microserviceID"],
        web_id.as_str()
    );
    message(addr, "GET", "/api/service/no-such-id", Some(t), None, 404);
    message(
        addr,
        "GET",
        "/api/services/000000000000000000000000",
        Some(t),
        None,
        404,
    );

    // A service added to the application.
    let mut more = sla("shop", "shopns", &["cache"]);
    more["applications"][0]["applicationID"] = json!(app_id);
    let job = expect(addr, "POST", "/api/service/", t, Some(&more), 200);
    let cache_id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        expect(
            addr,
            "GET",
            &format!("/api/application/{app_id}"),
            t,
            None,
            200
        )["microservices"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    message(
        addr,
        "POST",
        "/api/service/",
        Some(t),
        Some(&sla("shop", "shopns", &["x"])),
        422,
    );

    // Deploy and scale: instances appear with Oakestra's statuses. This worker runs
    // processes only, so container instances find no cluster.
    let scaled = expect(
        addr,
        "POST",
        &format!("/api/service/{web_id}/instance"),
        t,
        None,
        200,
    );
    assert_eq!(scaled["replicas"], 1);
    expect(
        addr,
        "POST",
        &format!("/api/service/{web_id}/instance"),
        t,
        None,
        200,
    );
    let path = format!("/api/service/{web_id}");
    let listed = eventually(
        "two instances of web, not placeable",
        Duration::from_secs(30),
        || async {
            let s = expect(addr, "GET", &path, t, None, 200);
            let list = s["instance_list"].as_array()?.clone();
            let numbers: Vec<u64> = list
                .iter()
                .filter_map(|i| i["instance_number"].as_u64())
                .collect();
            let placed = list.iter().all(|i| i["status"] == "TargetClusterNotFound");
            (numbers == [0, 1] && placed).then_some(s)
        },
    )
    .await;
    assert_eq!(listed["status"], "TargetClusterNotFound");
    assert!(
        listed["instance_list"][0]["status_detail"]
            .as_str()
            .unwrap()
            .starts_with("NoTargetCluster"),
        "{listed}"
    );
    message(
        addr,
        "DELETE",
        &format!("/api/service/{web_id}/instance/7"),
        Some(t),
        None,
        404,
    );
    message(
        addr,
        "DELETE",
        &format!("/api/service/{web_id}/instance/x"),
        Some(t),
        None,
        400,
    );
    let down = expect(
        addr,
        "DELETE",
        &format!("/api/service/{web_id}/instance/1"),
        t,
        None,
        200,
    );
    assert_eq!(down["replicas"], 1);
    eventually("one instance of web", Duration::from_secs(30), || async {
        let s = expect(addr, "GET", &path, t, None, 200);
        (s["instance_list"].as_array()?.len() == 1).then_some(())
    })
    .await;

    // An update of a service (PUT: Oakestra answers 501; here it rolls the Service).
    let mut changed = sla("shop", "shopns", &["web"]);
    changed["applications"][0]["microservices"][0]["cmd"] = json!(["nginx", "-T"]);
    expect(addr, "PUT", &path, t, Some(&changed), 200);
    let updated = expect(addr, "GET", &path, t, None, 200);
    assert_eq!(updated["cmd"], json!(["nginx", "-T"]));
    assert_eq!(updated["replicas"], 1, "an update keeps the replicas");
    message(
        addr,
        "PUT",
        &path,
        Some(t),
        Some(&sla("shop", "shopns", &["other"])),
        422,
    );

    expect(
        addr,
        "DELETE",
        &format!("/api/service/{cache_id}"),
        t,
        None,
        200,
    );
    message(
        addr,
        "GET",
        &format!("/api/service/{cache_id}"),
        Some(t),
        None,
        404,
    );

    // Clusters, with Oakestra's legacy names.
    let active = eventually("cluster local active", Duration::from_secs(30), || async {
        let list = expect(addr, "GET", "/api/clusters/active", t, None, 200);
        (list.as_array()?.len() == 1).then_some(list)
    })
    .await;
    let local = &active[0];
    assert_eq!(local["cluster_name"], "local");
    assert_eq!(local["active"], true);
    assert_eq!(local["active_nodes"], 1);
    assert!(local["total_cpu_cores"].as_f64().unwrap() > 0.0);
    assert!(local["memory_in_mb"].as_u64().unwrap() > 0);
    assert_eq!(local["virtualization"], json!(["process"]));
    let all = expect(addr, "GET", "/api/clusters", t, None, 200);
    assert_eq!(all[0]["cluster_name"], "local", "{all}");

    // Ids survive a restart (sessions do not: log in again).
    up.restart();
    let (code, again) = login(addr, "Admin", "Admin");
    assert_eq!(code, 200);
    let t2 = again["token"].as_str().unwrap().to_string();
    message(addr, "GET", "/api/applications", Some(t), None, 401);
    let after = expect(
        addr,
        "GET",
        &format!("/api/application/{app_id}"),
        &t2,
        None,
        200,
    );
    assert_eq!(after["microservices"].as_array().unwrap().len(), 2);
    assert!(after["microservices"]
        .as_array()
        .unwrap()
        .contains(&json!(web_id)));

    // Deleting the application deletes its services.
    assert_eq!(
        expect(
            addr,
            "DELETE",
            &format!("/api/application/{app_id}"),
            &t2,
            None,
            200
        )["message"],
        "Application Deleted"
    );
    message(
        addr,
        "GET",
        &format!("/api/application/{app_id}"),
        Some(&t2),
        None,
        404,
    );
    message(addr, "GET", &path, Some(&t2), None, 404);
    let left = expect(addr, "GET", "/api/applications", &t2, None, 200);
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_serves_it_over_tls_only_without_the_default_login() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("embedded:{}", dir.path().join("root").display());
    let root = RootServer::start_with(&store, dir.path(), &["--no-controllers"]);
    let addr: SocketAddr = ([127, 0, 0, 1], root.port).into();
    // Plain HTTP from loopback, even to Oakestra's paths: no answer (the TLS handshake
    // fails).
    assert_eq!(
        plain_http(
            addr,
            "POST",
            "/api/auth/login",
            None,
            Some(r#"{"username":"Admin","password":"Admin"}"#)
        ),
        None
    );
    let anonymous = tls_client(&root.url(), &root.data_dir, None);
    let token = &tls_login(&anonymous, &root.data_dir).await;
    let with = tls_client(&root.url(), &root.data_dir, Some(token));
    assert_eq!(
        with.get_json("/api/applications/").await.unwrap(),
        json!([])
    );
    // A session is an administrator for the Kubernetes paths too.
    with.get_json("/api/v1/namespaces")
        .await
        .expect("namespaces with a session");
    // The admin kubeconfig's certificate reaches the facade as well.
    let admin = root.client();
    assert_eq!(admin.get_json("/api/clusters/").await.unwrap(), json!([]));
}

/// This machine's first global IPv4 address, if it has one.
fn global_address() -> Option<std::net::Ipv4Addr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let cidr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?;
    cidr.split('/').next()?.parse().ok()
}

/// `oakestra up` listening on every address serves plain HTTP to loopback clients only:
/// the same request from the machine's own non-loopback address (a peer that is not
/// loopback, as another machine's would be) gets no answer, and the login over TLS from
/// there refuses Admin/Admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_from_a_non_loopback_address_is_refused() {
    let Some(ip) = global_address() else {
        println!("this machine has no global IPv4 address: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let api_port = free_port();
    let mut args = e2e::up_args(api_port, 0, &data, &["--runtime", "process"]);
    args[2] = format!("0.0.0.0:{api_port}");
    let _up = Oakestra::start("up", &args, Some(api_port), dir.path());
    let body = r#"{"username":"Admin","password":"Admin"}"#;
    let loopback: SocketAddr = ([127, 0, 0, 1], api_port).into();
    let (code, _) = plain_http(loopback, "POST", "/api/auth/login", None, Some(body)).unwrap();
    assert_eq!(code, 200, "from loopback");
    let other = SocketAddr::from((ip, api_port));
    assert_eq!(
        plain_http(other, "POST", "/api/auth/login", None, Some(body)),
        None,
        "plain HTTP from {ip}"
    );
    // The serving certificate does not name this address: check it by `localhost`.
    let ca = std::fs::read_to_string(data.join("root/pki/ca.crt")).unwrap();
    let tls = client::Client::with_tls(
        &format!("https://{other}"),
        TlsOptions {
            ca_pem: Some(ca),
            identity: None,
            bearer: None,
            server_name: Some("localhost".into()),
        },
    )
    .unwrap();
    let err = tls
        .post_json("/api/auth/login", &serde_json::from_str(body).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(401),
        "Admin/Admin over TLS from {ip}: {err}"
    );
}
