//! The subcommands, one file each (as cargo does), and what they share: the [`Session`]
//! (client and namespace), kind lookup by name, and reading manifests (and Oakestra
//! SLAs among them).

pub mod apply;
pub mod config;
pub mod convert;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod get;
pub mod logs;

use std::path::PathBuf;

use client::{Client, DynamicApi};
use crds::KindInfo;

use crate::exit::Failure;
use crate::manifest;

/// The subcommands of `oakctl`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Create or update the objects of manifests (files, directories, or - for stdin)
    /// with server-side apply; prune what was dropped from them.
    Apply(apply::Args),
    /// Show what applying manifests would change (exit 0: nothing, 1: something).
    Diff(diff::Args),
    /// List objects, or show one.
    Get(get::Args),
    /// Show one object in detail: spec, status, conditions and recent events.
    Describe(describe::Args),
    /// Delete objects by kind and name, or those of manifests.
    Delete(delete::Args),
    /// Print the output of an Instance's workload (through the API server).
    Logs(logs::Args),
    /// Print the manifests an Oakestra SLA maps to (multi-document YAML), without a
    /// server: what `apply -f` does with the SLA, to keep as declarative files.
    Convert(convert::Args),
    /// Manage contexts in the config file.
    Config {
        /// What to do with the config file.
        #[command(subcommand)]
        action: config::Action,
    },
}

/// What every command that talks to an API server needs: the client and the namespace
/// of namespaced kinds (from `--namespace`, the context, or `default`).
pub struct Session {
    /// The API server's client.
    pub client: Client,
    /// The namespace objects without one of their own are in.
    pub namespace: String,
}

impl Session {
    /// Run a command against the API server.
    pub async fn run(&self, command: Command) -> anyhow::Result<()> {
        match command {
            Command::Apply(args) => apply::run(self, args).await,
            Command::Diff(args) => diff::run(self, args).await,
            Command::Get(args) => get::run(self, args).await,
            Command::Describe(args) => describe::run(self, args).await,
            Command::Delete(args) => delete::run(self, args).await,
            Command::Logs(args) => logs::run(self, args).await,
            Command::Config { .. } => unreachable!("config commands need no session"),
            Command::Convert(_) => unreachable!("convert needs no session"),
        }
    }

    /// The API of `kind` in namespace `ns`, or in the session's namespace.
    pub fn api(&self, kind: &'static KindInfo, ns: Option<&str>) -> DynamicApi {
        self.client
            .dynamic(kind, Some(ns.unwrap_or(&self.namespace)))
    }
}

/// The kind a user named (plural, singular or short name); an unknown one is a usage
/// error that lists the known kinds.
pub fn kind(name: &str) -> anyhow::Result<&'static KindInfo> {
    crds::kind_by_name(name).ok_or_else(|| {
        let known: Vec<&str> = crds::KINDS.iter().map(|k| k.plural).collect();
        Failure::usage(format!(
            "unknown kind {name:?}; known kinds: {}",
            known.join(", ")
        ))
    })
}

/// Every object of the manifests at `files` (SLAs imported with the default
/// [`sla::Options`]); any invalid one is an input error that names each problem, and
/// nothing is done.
pub fn load(files: &[PathBuf]) -> anyhow::Result<Vec<manifest::Document>> {
    refused(manifest::load(files, &sla::Options::default()), "applied")
}

/// The manifests a command reads (`apply`, `diff`): files or directories of manifests
/// or Oakestra SLAs, and how SLAs are imported.
#[derive(clap::Args)]
pub struct Manifests {
    /// Manifest files, directories of them, or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    sla: convert::SlaFlags,
}

impl Manifests {
    /// Every object they hold, as [`load`] reads them, SLAs imported as the flags say.
    pub fn load(&self) -> anyhow::Result<Vec<manifest::Document>> {
        refused(manifest::load(&self.files, &self.sla.options()), "applied")
    }
}

/// The documents, or a usage error listing every problem and saying nothing was `done`.
pub fn refused(
    read: Result<Vec<manifest::Document>, Vec<manifest::ManifestError>>,
    done: &str,
) -> anyhow::Result<Vec<manifest::Document>> {
    read.map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        Failure::usage(format!("{}\nnothing was {done}", lines.join("\n")))
    })
}
