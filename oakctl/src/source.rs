//! Which API server `oakctl` talks to, with which credentials, and where that setting
//! came from. In order: a kubeconfig found as kubectl finds it (`--kubeconfig`,
//! `$KUBECONFIG`, `~/.kube/config`; `--server` then only replaces its server, its CA
//! and user kept); else `--server` (or `$OAKCTL_SERVER`) as a plain URL; else the context
//! of oakctl's own config file ([`crate::config`]); else the admin kubeconfig that
//! `oakestra up` writes (`$OAKESTRA_DATA/admin.kubeconfig`, else
//! `~/.local/share/oakestra/admin.kubeconfig`); else nothing: every server needs a
//! credential, so oakctl says where to find one.
//!
//! The choice is [`choose`], a pure function of the flags, the environment and which
//! files exist; [`connect`] reads what it chose and makes the client.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use client::kubeconfig::{self, Kubeconfig};
use client::Client;

use crate::config::{self, Config};
use crate::exit::Failure;

/// The global flags that say where to connect.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flags<'a> {
    /// `--server` (or `$OAKCTL_SERVER`).
    pub server: Option<&'a str>,
    /// `--kubeconfig`.
    pub kubeconfig: Option<&'a Path>,
    /// `--context`: of the kubeconfig, else of oakctl's config file.
    pub context: Option<&'a str>,
}

/// The environment variables the choice reads.
#[derive(Debug, Default, Clone)]
pub struct Env {
    /// `$KUBECONFIG`.
    pub kubeconfig: Option<OsString>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$OAKESTRA_DATA` (the data directory of `oakestra up`).
    pub oakestra_data: Option<PathBuf>,
}

impl Env {
    /// This process's environment.
    pub fn of_process() -> Env {
        Env {
            kubeconfig: std::env::var_os("KUBECONFIG"),
            home: std::env::var_os("HOME").map(PathBuf::from),
            oakestra_data: std::env::var_os("OAKESTRA_DATA").map(PathBuf::from),
        }
    }
}

/// Where the settings come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A kubeconfig file, its server replaced by `server` if given.
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// `--server`, replacing the context's server.
        server: Option<String>,
    },
    /// `--server` as a plain URL, with no credential.
    Server(String),
    /// The context of oakctl's config file.
    Config,
    /// Nothing was found.
    Default,
}

/// Where `oakestra up` writes its admin kubeconfig.
pub fn admin_kubeconfig(env: &Env) -> Option<PathBuf> {
    env.oakestra_data
        .as_ref()
        .map(|d| d.join("admin.kubeconfig"))
        .or_else(|| {
            env.home
                .as_ref()
                .map(|h| h.join(".local/share/oakestra/admin.kubeconfig"))
        })
}

/// Where the settings come from (see the module's doc for the order).
/// `config_has_context`: oakctl's config file has the context `--context` names, or a
/// current one when none is named. `exists` is the check for a file.
pub fn choose(
    flags: &Flags,
    env: &Env,
    config_has_context: bool,
    exists: impl Fn(&Path) -> bool,
) -> Source {
    let found = kubeconfig::locate(
        flags.kubeconfig,
        env.kubeconfig.as_deref(),
        env.home.as_deref(),
        &exists,
    );
    if let Some(path) = found {
        return Source::Kubeconfig {
            path,
            server: flags.server.map(String::from),
        };
    }
    if let Some(server) = flags.server {
        return Source::Server(server.into());
    }
    if config_has_context {
        return Source::Config;
    }
    match admin_kubeconfig(env) {
        Some(path) if exists(&path) => Source::Kubeconfig { path, server: None },
        _ => Source::Default,
    }
}

/// The client of the chosen source, its namespace if it names one, and where it came
/// from (what `oakctl config current` shows).
pub struct Target {
    /// The API server's client.
    pub client: Client,
    /// The namespace of the kubeconfig context or the config file's context.
    pub namespace: Option<String>,
    /// Where the settings came from, e.g. `kubeconfig /home/u/.kube/config, context admin`.
    pub origin: String,
}

impl Target {
    /// The namespace of commands: `flag` (`--namespace`), else the context's, else
    /// `default`.
    pub fn namespace(&self, flag: Option<&str>) -> String {
        flag.or(self.namespace.as_deref())
            .unwrap_or("default")
            .to_string()
    }
}

/// Choose the source from the flags, this process's environment and `config`, and
/// connect to it.
pub fn target(flags: &Flags, config: &Config) -> anyhow::Result<Target> {
    let has_context = matches!(config.context(flags.context), Ok(Some(_)));
    connect(
        choose(flags, &Env::of_process(), has_context, Path::exists),
        flags,
        config,
    )
}

/// Read `source` and make its client.
pub fn connect(source: Source, flags: &Flags, config: &Config) -> anyhow::Result<Target> {
    Ok(match source {
        Source::Kubeconfig { path, server } => {
            let resolved = Kubeconfig::load(&path)?.resolve(flags.context)?;
            let mut origin = format!(
                "kubeconfig {}, context {}",
                path.display(),
                resolved.context
            );
            if server.is_some() {
                origin.push_str(", its server replaced by --server");
            }
            Target {
                client: resolved.client(server.as_deref())?,
                namespace: resolved.namespace,
                origin,
            }
        }
        Source::Server(url) => Target {
            client: Client::new(&url)?,
            namespace: None,
            origin: "--server (or $OAKCTL_SERVER)".into(),
        },
        Source::Config => {
            let context = config
                .context(flags.context)?
                .expect("chosen because the config file has the context");
            Target {
                client: Client::new(&context.server)?,
                namespace: context.namespace.clone(),
                origin: format!(
                    "oakctl config {}, context {}",
                    config::path().display(),
                    context.name
                ),
            }
        }
        Source::Default => {
            if let Some(name) = flags.context {
                return Err(Failure::usage(format!(
                    "no context named {name:?}: no kubeconfig was found and {} has no such context",
                    config::path().display()
                )));
            }
            return Err(Failure::usage(
                "no kubeconfig found: pass --kubeconfig FILE or set KUBECONFIG \
                 (`oakestra up` writes ~/.local/share/oakestra/admin.kubeconfig, \
                 `oakestra root` admin.kubeconfig in its data directory)"
                    .to_string(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_follows_flags_env_and_files() {
        let p = |s: &str| PathBuf::from(s);
        let kube = |path: &str, server: Option<&str>| Source::Kubeconfig {
            path: p(path),
            server: server.map(String::from),
        };
        let env = |kubeconfig: Option<&str>, data: Option<&str>| Env {
            kubeconfig: kubeconfig.map(OsString::from),
            home: Some(p("/home/u")),
            oakestra_data: data.map(PathBuf::from),
        };
        const HOME_KUBE: &str = "/home/u/.kube/config";
        const ADMIN: &str = "/home/u/.local/share/oakestra/admin.kubeconfig";
        struct Case {
            what: &'static str,
            server: Option<&'static str>,
            kubeconfig: Option<&'static str>,
            env: Env,
            config_has_context: bool,
            files: &'static [&'static str],
            chosen: Source,
        }
        let case = |what, server, kubeconfig, env, config_has_context, files, chosen| Case {
            what,
            server,
            kubeconfig,
            env,
            config_has_context,
            files,
            chosen,
        };
        let cases = [
            case(
                "--kubeconfig wins, even if missing",
                None,
                Some("/k"),
                env(Some("/e"), None),
                true,
                &["/e", HOME_KUBE, ADMIN],
                kube("/k", None),
            ),
            case(
                "--server replaces the kubeconfig's server",
                Some("https://other:1"),
                Some("/k"),
                env(None, None),
                false,
                &["/k"],
                kube("/k", Some("https://other:1")),
            ),
            case(
                "$KUBECONFIG: its first existing file",
                None,
                None,
                env(Some("/gone:/e"), None),
                true,
                &["/e", HOME_KUBE],
                kube("/e", None),
            ),
            case(
                "~/.kube/config",
                Some("http://s:1"),
                None,
                env(None, None),
                true,
                &[HOME_KUBE, ADMIN],
                kube(HOME_KUBE, Some("http://s:1")),
            ),
            case(
                "no kubeconfig: --server is a plain URL",
                Some("http://s:1"),
                None,
                env(Some("/gone"), None),
                true,
                &[ADMIN],
                Source::Server("http://s:1".into()),
            ),
            case(
                "then oakctl's config, before the admin kubeconfig",
                None,
                None,
                env(None, None),
                true,
                &[ADMIN],
                Source::Config,
            ),
            case(
                "then the admin kubeconfig of oakestra up",
                None,
                None,
                env(None, None),
                false,
                &[ADMIN],
                kube(ADMIN, None),
            ),
            case(
                "in $OAKESTRA_DATA if set",
                None,
                None,
                env(None, Some("/data")),
                false,
                &["/data/admin.kubeconfig", ADMIN],
                kube("/data/admin.kubeconfig", None),
            ),
            case(
                "$OAKESTRA_DATA without the file: the default",
                None,
                None,
                env(None, Some("/data")),
                false,
                &[ADMIN],
                Source::Default,
            ),
            case(
                "nothing at all",
                None,
                None,
                env(None, None),
                false,
                &[],
                Source::Default,
            ),
        ];
        for c in cases {
            let flags = Flags {
                server: c.server,
                kubeconfig: c.kubeconfig.map(Path::new),
                context: None,
            };
            let exists = |path: &Path| c.files.iter().any(|f| path == Path::new(f));
            assert_eq!(
                choose(&flags, &c.env, c.config_has_context, exists),
                c.chosen,
                "{}",
                c.what
            );
        }
    }

    #[test]
    fn a_kubeconfig_context_gives_server_namespace_and_origin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "clusters:\n- {name: c, cluster: {server: 'http://127.0.0.1:9'}}\n\
             contexts:\n- {name: a, context: {cluster: c, namespace: team}}\n\
             - {name: b, context: {cluster: c}}\ncurrent-context: a\n",
        )
        .unwrap();
        let source = |server: Option<&str>| Source::Kubeconfig {
            path: path.clone(),
            server: server.map(String::from),
        };
        let config = Config::default();
        let t = connect(source(None), &Flags::default(), &config).unwrap();
        assert_eq!(t.client.base(), "http://127.0.0.1:9");
        assert_eq!(t.namespace.as_deref(), Some("team"));
        assert_eq!(
            t.origin,
            format!("kubeconfig {}, context a", path.display())
        );
        let flags = Flags {
            context: Some("b"),
            ..Flags::default()
        };
        let t = connect(source(Some("http://127.0.0.1:8")), &flags, &config).unwrap();
        assert_eq!(t.client.base(), "http://127.0.0.1:8");
        assert_eq!(t.namespace, None);
        assert!(t
            .origin
            .ends_with("context b, its server replaced by --server"));
        let flags = Flags {
            context: Some("zz"),
            ..Flags::default()
        };
        let e = connect(source(None), &flags, &config).err().unwrap();
        assert_eq!(crate::exit::Exit::of(&e), crate::exit::Exit::Usage);
        assert!(e.to_string().contains("no context \"zz\""), "{e}");
    }
}
