//! `oakctl config …`: add, choose and show the contexts of the config file (see
//! [`crate::config`] for the file itself).

use client::Client;

use crate::config::{Config, Context};

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
}

/// Change or print `config` as `action` says, saving it when changed.
pub fn run(mut config: Config, action: Action) -> anyhow::Result<()> {
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
    }
    Ok(())
}
