//! `oakctl convert -f app.json`: the manifests an Oakestra SLA maps to (see
//! [`sla`] and `docs/oakestra.md`), printed as multi-document YAML, so that a
//! user can keep declarative files instead of the SLA. Needs no server. The objects are
//! checked as `apply` checks them; any problem refuses the whole input and prints
//! nothing. Also the SLA flags `apply` and `diff` take ([`SlaFlags`]).

use std::path::PathBuf;

use crds::ipam::Cidr;

use crate::commands::refused;
use crate::manifest;

/// How Oakestra SLAs are imported (`convert`, and SLAs given to `apply` and `diff`).
#[derive(clap::Args, Debug, Clone)]
pub struct SlaFlags {
    /// Range an SLA's `rr_ip` and `closest_ip` must be in: the root's `--service-cidr`.
    #[arg(long, value_name = "CIDR", default_value = sla::DEFAULT_SERVICE_CIDR)]
    service_cidr: Cidr,
    /// Import an SLA's microservices with 0 replicas: registered, not deployed (as in
    /// Oakestra before `deploy`).
    #[arg(long)]
    no_deploy: bool,
}

impl SlaFlags {
    /// The import's options these flags say.
    pub fn options(&self) -> sla::Options {
        sla::Options {
            service_cidr: self.service_cidr,
            replicas: if self.no_deploy { 0 } else { 1 },
        }
    }
}

/// The arguments of `oakctl convert`.
#[derive(clap::Args)]
pub struct Args {
    /// Oakestra SLA files (JSON), directories of them, or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    sla: SlaFlags,
}

/// Print every object the SLAs map to, Namespaces first, as YAML documents.
pub fn run(args: Args) -> anyhow::Result<()> {
    let docs = refused(
        manifest::load_slas(&args.files, &args.sla.options()),
        "converted",
    )?;
    out!("{}", yaml(docs.iter().map(|d| &d.object))?);
    Ok(())
}

/// Objects as a multi-document YAML stream, each document opened by `---`.
fn yaml<'a>(objects: impl Iterator<Item = &'a serde_json::Value>) -> anyhow::Result<String> {
    let mut text = String::new();
    for object in objects {
        text.push_str("---\n");
        text.push_str(&yaml_serde::to_string(object)?);
    }
    Ok(text)
}
