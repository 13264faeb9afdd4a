//! `oakctl config …`: add, choose and show the contexts of the config file (see
//! [`crate::config`] for the file itself), and show which server oakctl talks to and
//! where that setting came from (see [`crate::source`]).

use client::Client;

use crate::config::{Config, Context};
use crate::source::Target;

/// What `oakctl config` does.
#[derive(clap::Subcommand)]
pub enum Action {
    /// Add or change a context.
    SetContext {
        /// Name of the context.
        name: String,
        /// URL of its API server.
        #[arg(long)]
        server: String,
        /// Its namespace of namespaced kinds (default: `default`).
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Make a context the current one.
    UseContext {
        /// Name of the context.
        name: String,
    },
    /// Print the config file.
    View,
    /// Show which server oakctl talks to, in which namespace, and where that came from
    /// (a kubeconfig and its context, `--server`, or the config file).
    Current,
}

/// Change or print `config` as `action` says, saving it when changed; `current` is
/// where oakctl would connect, and in which namespace (for `config current`).
pub fn run(
    mut config: Config,
    action: Action,
    current: impl FnOnce(&Config) -> anyhow::Result<(Target, String)>,
) -> anyhow::Result<()> {
    match action {
        Action::SetContext {
            name,
            server,
            namespace,
        } => {
            Client::new(&server)?;
            config.contexts.retain(|c| c.name != name);
            config.contexts.push(Context {
                name: name.clone(),
                server,
                namespace,
            });
            if config.current_context.is_none() {
                config.current_context = Some(name.clone());
            }
            config.save()?;
            outln!("context {name:?} set");
        }
        Action::UseContext { name } => {
            config.context(Some(&name))?;
            config.current_context = Some(name.clone());
            config.save()?;
            outln!("switched to context {name:?}");
        }
        Action::View => out!("{}", yaml_serde::to_string(&config)?),
        Action::Current => {
            let (target, namespace) = current(&config)?;
            outln!("server:    {}", target.client.base());
            outln!("namespace: {namespace}");
            outln!("from:      {}", target.origin);
        }
    }
    Ok(())
}
