//! `oakctl`: the command-line client of the Oakestra API, with kubectl's habits.
//!
//! Modules:
//! - `commands`: the subcommands, one file each (`apply`, `get`, `describe`, `delete`,
//!   `logs`, `config`), and the session they share.
//! - `exit`: the exit codes scripts can rely on, decided in one function from the error.
//! - `manifest`: reading manifests (files, directories, stdin; YAML and JSON), with
//!   errors that name file, document and line.
//! - `print`: tables like kubectl's, YAML, JSON and names.
//! - `config`: the config file of contexts (which server, which namespace).

/// Print to stdout; a closed pipe (`oakctl get … | head`) ends the program quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::emit(&format!($($arg)*))
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    () => {
        $crate::emit("\n")
    };
    ($($arg:tt)*) => {
        $crate::emit(&format!("{}\n", format!($($arg)*)))
    };
}

mod commands;
mod config;
mod exit;
mod manifest;
mod print;

use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use client::Client;

use crate::commands::{Command, Session};
use crate::exit::Exit;

#[derive(Parser)]
#[command(
    name = "oakctl",
    version,
    about = "Command-line client of the Oakestra API"
)]
struct Cli {
    /// API server URL (default: the current context, else `http://127.0.0.1:10000`).
    #[arg(long, global = true, env = "OAKCTL_SERVER")]
    server: Option<String>,
    /// Context of the config file to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace of namespaced kinds.
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Write `text` to stdout; a closed pipe exits 0, any other write error exits 1.
fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
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
            eprintln!("error: {e:#}");
            Exit::of(&e).into()
        }
    }
}

/// Pick the server and namespace (flags, then the context, then defaults) and run the
/// command.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = config::Config::load()?;
    if let Command::Config { action } = cli.command {
        return commands::config::run(config, action);
    }
    let context = config.context(cli.context.as_deref())?;
    let server = cli
        .server
        .or_else(|| context.map(|c| c.server.clone()))
        .unwrap_or_else(|| config::DEFAULT_SERVER.to_string());
    let namespace = cli
        .namespace
        .or_else(|| context.and_then(|c| c.namespace.clone()))
        .unwrap_or_else(|| "default".into());
    let session = Session {
        client: Client::new(&server)?,
        namespace,
    };
    session.run(cli.command).await
}
