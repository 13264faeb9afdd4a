//! `oakctl`: the command-line client of the Oakestra API, with kubectl's habits.
//!
//! Modules:
//! - `commands`: the subcommands, one file each (`apply`, `diff`, `get`, `describe`,
//!   `delete`, `logs`, `config`, `convert`), and the session they share.
//! - `exit`: the exit codes scripts can rely on, decided in one function from the error.
//! - `manifest`: reading manifests (files, directories, stdin; YAML and JSON), with
//!   errors that name file, document and line.
//! - `print`: tables like kubectl's, YAML, JSON and names.
//! - the `sla` crate (used as `sla`): Oakestra SLAs mapped to Namespaces and Services
//!   (pure; `docs/oakestra.md`), shared with the root's Oakestra API.
//! - `config`: oakctl's own config file of contexts (which server, which namespace).
//! - `ssa`: server-side apply as `apply` and `diff` send it, and what its answers mean.
//! - `source`: which server to talk to with which credentials (a kubeconfig, `--server`,
//!   the config file, the admin kubeconfig of `oakestra up`), and where that came from.

/// Print to stdout; a closed pipe (`oakctl get … | head`) ends the program quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::emit(format!($($arg)*).as_bytes())
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    () => {
        $crate::emit(b"\n")
    };
    ($($arg:tt)*) => {
        $crate::emit(format!("{}\n", format!($($arg)*)).as_bytes())
    };
}

mod commands;
mod config;
mod exit;
mod manifest;
mod print;
mod source;
mod ssa;

use std::path::PathBuf;

use clap::{CommandFactory as _, FromArgMatches as _, Parser};

use crate::commands::{Command, Session};
use crate::exit::Exit;

#[derive(Parser)]
#[command(
    name = "oakctl",
    version,
    about = "Command-line client of the Oakestra API"
)]
struct Cli {
    /// API server URL: replaces the server of the kubeconfig's context (its CA and user
    /// kept), else is used as is (default: the kubeconfig, else the current context of
    /// oakctl's config file, else oakestra up's admin kubeconfig).
    #[arg(long, global = true, env = "OAKCTL_SERVER")]
    server: Option<String>,
    /// Kubeconfig file to use (default: the first existing file of `$KUBECONFIG`, else
    /// `~/.kube/config`).
    #[arg(long, global = true, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig (or of oakctl's config file) to use.
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    /// Namespace of namespaced kinds.
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Write `bytes` to stdout; a closed pipe exits 0, any other write error exits 1.
fn emit(bytes: &[u8]) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(Exit::Ok as i32);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(Exit::Failed as i32);
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Usage errors exit 2 (clap's own code, which `Exit::Usage` keeps).
    let matches = Cli::command().after_help(exit::help()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli).await {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            let message = format!("{e:#}");
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            Exit::of(&e).into()
        }
    }
}

/// Pick the server, credentials and namespace (see [`source`]; `--namespace` wins over
/// the context's, else `default`) and run the command.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = match cli.command {
        Command::Convert(args) => return commands::convert::run(args),
        other => other,
    };
    let config = config::Config::load()?;
    let flags = source::Flags {
        server: cli.server.as_deref(),
        kubeconfig: cli.kubeconfig.as_deref(),
        context: cli.context.as_deref(),
    };
    if let Command::Config { action } = command {
        let namespace = cli.namespace.as_deref();
        return commands::config::run(config, action, |config| {
            let target = source::target(&flags, config)?;
            let namespace = target.namespace(namespace);
            Ok((target, namespace))
        });
    }
    let target = source::target(&flags, &config)?;
    let session = Session {
        namespace: target.namespace(cli.namespace.as_deref()),
        client: target.client,
    };
    session.run(command).await
}
