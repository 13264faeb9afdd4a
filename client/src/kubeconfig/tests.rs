use std::ffi::OsString;

use super::*;
use crate::testing::Ca;

/// Write `text` as `dir/name` and load it.
fn load(dir: &Path, name: &str, text: &str) -> (Kubeconfig, PathBuf) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    (Kubeconfig::load(&path).unwrap(), path)
}

/// A kubeconfig with one cluster `c`, user `u` and context `ctx` between them, the
/// cluster and user as given (YAML, indented for their place).
fn file(cluster: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: ctx\nclusters:\n- name: c\n  cluster:\n{cluster}\nusers:\n- name: u\n  user:\n{user}\ncontexts:\n- name: ctx\n  context: {{cluster: c, user: u, namespace: team}}\n"
    )
}

#[test]
fn data_path_and_token_users_resolve() {
    let ca = Ca::new("test CA");
    let me = ca.leaf("admin", &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pki")).unwrap();
    std::fs::write(dir.path().join("pki/ca.crt"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("pki/me.crt"), &me.cert_pem).unwrap();
    std::fs::write(dir.path().join("pki/me.key"), &me.key_pem).unwrap();
    std::fs::write(dir.path().join("token"), "abc123.secret\n").unwrap();
    let data_cluster = format!(
        "    server: https://127.0.0.1:6443\n    certificate-authority-data: {}\n    tls-server-name: api.internal",
        encode(&ca.pem)
    );
    let path_cluster = "    server: https://10.0.0.1:6443\n    certificate-authority: pki/ca.crt";
    let data_user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}",
        encode(&me.cert_pem),
        encode(&me.key_pem)
    );
    let path_user = "    client-certificate: pki/me.crt\n    client-key: pki/me.key";
    struct Case {
        name: &'static str,
        cluster: String,
        user: String,
        server: &'static str,
        server_name: Option<&'static str>,
        identity: bool,
        bearer: Option<&'static str>,
    }
    let cases = [
        Case {
            name: "data fields",
            cluster: data_cluster.clone(),
            user: data_user,
            server: "https://127.0.0.1:6443",
            server_name: Some("api.internal"),
            identity: true,
            bearer: None,
        },
        Case {
            name: "path fields, relative to the file",
            cluster: path_cluster.into(),
            user: path_user.into(),
            server: "https://10.0.0.1:6443",
            server_name: None,
            identity: true,
            bearer: None,
        },
        Case {
            name: "a token",
            cluster: data_cluster.clone(),
            user: "    token: abc123.inline".into(),
            server: "https://127.0.0.1:6443",
            server_name: Some("api.internal"),
            identity: false,
            bearer: Some("abc123.inline"),
        },
        Case {
            name: "a token file, trimmed",
            cluster: path_cluster.into(),
            user: "    tokenFile: token".into(),
            server: "https://10.0.0.1:6443",
            server_name: None,
            identity: false,
            bearer: Some("abc123.secret"),
        },
    ];
    for case in cases {
        let (config, _) = load(dir.path(), "config", &file(&case.cluster, &case.user));
        let r = config
            .resolve(None)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(r.context, "ctx", "{}", case.name);
        assert_eq!(r.server, case.server, "{}", case.name);
        assert_eq!(r.namespace.as_deref(), Some("team"), "{}", case.name);
        assert_eq!(
            r.tls.ca_pem.as_deref(),
            Some(ca.pem.as_str()),
            "{}",
            case.name
        );
        assert_eq!(
            r.tls.server_name.as_deref(),
            case.server_name,
            "{}",
            case.name
        );
        assert_eq!(
            r.tls.identity.as_ref().map(|i| i.leaf_der()),
            case.identity.then(|| me.der.clone()),
            "{}",
            case.name
        );
        assert_eq!(r.tls.bearer.as_deref(), case.bearer, "{}", case.name);
        let (client, ns) = config.client(None).unwrap();
        assert_eq!(client.base(), case.server, "{}", case.name);
        assert_eq!(ns.as_deref(), Some("team"));
    }
}

#[test]
fn faults_name_the_file_and_the_field() {
    let ca = Ca::new("test CA");
    let me = ca.leaf("admin", &[]);
    let dir = tempfile::tempdir().unwrap();
    let good_cluster = format!(
        "    server: https://127.0.0.1:6443\n    certificate-authority-data: {}",
        encode(&ca.pem)
    );
    let path = dir.path().join("config");
    let shown = path.display().to_string();
    // (what, the file, the context asked for, the message expected after "<file>: ")
    let cases: Vec<(&str, String, Option<&str>, String)> = vec![
        (
            "missing context",
            file(&good_cluster, "    token: t"),
            Some("foo"),
            "no context \"foo\" in contexts[]".into(),
        ),
        (
            "no current context",
            file(&good_cluster, "    token: t").replace("current-context: ctx\n", ""),
            None,
            "no context chosen: current-context is not set".into(),
        ),
        (
            "missing user",
            file(&good_cluster, "    token: t").replace("user: u,", "user: bar,"),
            None,
            "context \"ctx\" names user \"bar\", which is not in users[]".into(),
        ),
        (
            "missing cluster",
            file(&good_cluster, "    token: t").replace("cluster: c,", "cluster: far,"),
            None,
            "context \"ctx\" names cluster \"far\", which is not in clusters[]".into(),
        ),
        (
            "bad base64",
            file(
                "    server: https://x:1\n    certificate-authority-data: '%%%'",
                "    token: t",
            ),
            None,
            "clusters[0].cluster.certificate-authority-data is not base64".into(),
        ),
        (
            "no server",
            file(
                &format!("    certificate-authority-data: {}", encode(&ca.pem)),
                "    token: t",
            ),
            None,
            "clusters[0].cluster.server is not set".into(),
        ),
        (
            "a missing CA file",
            file(
                "    server: https://x:1\n    certificate-authority: nope.crt",
                "    token: t",
            ),
            None,
            format!(
                "clusters[0].cluster.certificate-authority: cannot read {}",
                dir.path().join("nope.crt").display()
            ),
        ),
        (
            "a certificate without its key",
            file(
                &good_cluster,
                &format!("    client-certificate-data: {}", encode(&me.cert_pem)),
            ),
            None,
            "users[0].user has a client certificate but no client key".into(),
        ),
        (
            "a certificate that is not PEM",
            file(
                &good_cluster,
                &format!(
                    "    client-certificate-data: {}\n    client-key-data: {}",
                    encode("hello"),
                    encode(&me.key_pem)
                ),
            ),
            None,
            "users[0].user: the certificate chain is not valid PEM (no CERTIFICATE block)".into(),
        ),
    ];
    for (what, text, context, expected) in cases {
        std::fs::write(&path, text).unwrap();
        let e = Kubeconfig::load(&path)
            .unwrap()
            .resolve(context)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("{shown}: {expected}")),
            "{what}: {e:?} is not {expected:?}"
        );
    }

    std::fs::write(&path, "clusters: 7\n").unwrap();
    let e = Kubeconfig::load(&path).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{shown}: not a kubeconfig")), "{e}");
    let e = Kubeconfig::load(&dir.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cannot read kubeconfig"), "{e}");
}

#[test]
fn a_saved_single_config_loads_back_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let ca = Ca::new("test CA");
    let me = ca.leaf("admin", &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep/admin.kubeconfig");
    let users = [
        KubeUser::Certificate {
            cert_pem: me.cert_pem.clone(),
            key_pem: me.key_pem.clone(),
        },
        KubeUser::Token("abc123.0123456789abcdef".into()),
    ];
    for user in users {
        let config = Kubeconfig::single("oakestra", "https://127.0.0.1:10000", &ca.pem, user);
        config.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = Kubeconfig::load(&path).unwrap();
        assert_eq!(
            Kubeconfig {
                path: None,
                ..loaded.clone()
            },
            config
        );
        let r = loaded.resolve(None).unwrap();
        assert_eq!(r.server, "https://127.0.0.1:10000");
        assert_eq!(r.tls.ca_pem.as_deref(), Some(ca.pem.as_str()));
        assert!(r.tls.identity.is_some() != r.tls.bearer.is_some());
    }
    // Only the file is left in the directory (no temporary file).
    let names: Vec<OsString> = std::fs::read_dir(dir.path().join("deep"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsString::from("admin.kubeconfig")]);
}

#[test]
fn locate_follows_kubectl_order() {
    let exists = |present: &'static [&'static str]| {
        move |p: &Path| present.iter().any(|x| p == Path::new(x))
    };
    let home = Some(Path::new("/home/u"));
    type Case = (
        Option<&'static str>,
        Option<&'static str>,
        &'static [&'static str],
        Option<&'static str>,
    );
    // (explicit, $KUBECONFIG, files that exist, chosen)
    let cases: [Case; 7] = [
        (
            Some("/x"),
            Some("/a"),
            &["/a", "/home/u/.kube/config"],
            Some("/x"),
        ),
        (Some("/x"), None, &[], Some("/x")),
        (
            None,
            Some("/a:/b"),
            &["/b", "/home/u/.kube/config"],
            Some("/b"),
        ),
        (None, Some("::/a"), &["/a"], Some("/a")),
        (
            None,
            Some("/a"),
            &["/home/u/.kube/config"],
            Some("/home/u/.kube/config"),
        ),
        (
            None,
            None,
            &["/home/u/.kube/config"],
            Some("/home/u/.kube/config"),
        ),
        (None, None, &[], None),
    ];
    for (explicit, env, present, chosen) in cases {
        let got = locate(
            explicit.map(Path::new),
            env.map(OsStr::new),
            home,
            exists(present),
        );
        assert_eq!(
            got.as_deref(),
            chosen.map(Path::new),
            "{explicit:?} {env:?} {present:?}"
        );
    }
}

/// The process's `$HOME` and `$KUBECONFIG` (one test changes them, so only one does).
#[test]
fn discover_reads_home_and_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".kube")).unwrap();
    let text = |server: &str| {
        format!("clusters:\n- name: c\n  cluster: {{server: '{server}'}}\ncontexts:\n- name: x\n  context: {{cluster: c}}\ncurrent-context: x\n")
    };
    std::fs::write(home.join(".kube/config"), text("http://home:1")).unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, text("http://other:1")).unwrap();
    let server = |found: Option<(Kubeconfig, PathBuf)>| {
        found.map(|(k, p)| (k.resolve(None).unwrap().server, p))
    };
    std::env::set_var("HOME", &home);
    std::env::remove_var("KUBECONFIG");
    assert_eq!(
        server(Kubeconfig::discover(None).unwrap()),
        Some(("http://home:1".into(), home.join(".kube/config")))
    );
    let list = std::env::join_paths([dir.path().join("absent"), other.clone()]).unwrap();
    std::env::set_var("KUBECONFIG", &list);
    assert_eq!(
        server(Kubeconfig::discover(None).unwrap()),
        Some(("http://other:1".into(), other.clone()))
    );
    let explicit = dir.path().join("explicit");
    let e = Kubeconfig::discover(Some(&explicit)).unwrap_err();
    assert!(matches!(e, KubeconfigError::Read { .. }), "{e}");
    std::env::remove_var("KUBECONFIG");
    std::fs::remove_file(home.join(".kube/config")).unwrap();
    assert!(Kubeconfig::discover(None).unwrap().is_none());
}
