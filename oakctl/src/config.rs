//! Which server to talk to: `--server`, `OAKCTL_SERVER`, or the current context of the
//! config file (`$OAKCTL_CONFIG`, default `~/.config/oakctl/config.yaml`).

use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Where `oakestra up` and `oakestra root` listen by default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:10000";

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Context {
    pub name: String,
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

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
    pub fn load() -> anyhow::Result<Config> {
        let path = path();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_yaml::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let path = path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, serde_yaml::to_string(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The context named `name`, or the current one.
    pub fn context(&self, name: Option<&str>) -> anyhow::Result<Option<&Context>> {
        match name.or(self.current_context.as_deref()) {
            None => Ok(None),
            Some(n) => self
                .contexts
                .iter()
                .find(|c| c.name == n)
                .map(Some)
                .with_context(|| format!("no context named {n:?} in {}", path().display())),
        }
    }
}
