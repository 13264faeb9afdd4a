//! Which server to talk to: `--server`, `OAKCTL_SERVER`, or the current context of the
//! config file (`$OAKCTL_CONFIG`, default `~/.config/oakctl/config.yaml`).

use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::exit::{Exit, Failure};

/// The config file: named contexts, and which one is used when `--context` is not given.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// The context used by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Every context, by name.
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// A named API server, with the namespace to use there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Context {
    /// What `--context` and `config use-context` call it.
    pub name: String,
    /// URL of the API server.
    pub server: String,
    /// Namespace of namespaced kinds (default: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Where the config file is: `$OAKCTL_CONFIG`, else `~/.config/oakctl/config.yaml`.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("OAKCTL_CONFIG") {
        return p.into();
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".config/oakctl/config.yaml")
}

impl Config {
    /// Read the config file; a missing one is an empty config, an invalid one an input
    /// error.
    pub fn load() -> anyhow::Result<Config> {
        let path = path();
        match std::fs::read_to_string(&path) {
            Ok(text) => yaml_serde::from_str(&text)
                .map_err(anyhow::Error::from)
                .context(Failure {
                    exit: Exit::Usage,
                    message: format!("reading {}", path.display()),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Write the config file, creating its directory if needed.
    pub fn save(&self) -> anyhow::Result<()> {
        let path = path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, yaml_serde::to_string(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The context named `name`, or the current one; naming one that is not there is a
    /// usage error.
    pub fn context(&self, name: Option<&str>) -> anyhow::Result<Option<&Context>> {
        match name.or(self.current_context.as_deref()) {
            None => Ok(None),
            Some(n) => self
                .contexts
                .iter()
                .find(|c| c.name == n)
                .map(Some)
                .ok_or_else(|| {
                    Failure::usage(format!("no context named {n:?} in {}", path().display()))
                }),
        }
    }
}
