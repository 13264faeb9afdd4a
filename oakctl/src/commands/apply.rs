//! `oakctl apply -f …`: create each object of the manifests, or replace it at its current
//! version. Invalid manifests are refused before anything is written.

use std::path::PathBuf;

use crate::commands::{load, Session};
use crate::exit::{Exit, Failure};
use crate::manifest::Document;

/// The arguments of `oakctl apply`.
#[derive(clap::Args)]
pub struct Args {
    /// Manifest files, directories of them, or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

/// Apply every object; report each, and fail at the end if any could not be applied
/// (at once if the server cannot be reached).
pub async fn run(s: &Session, args: Args) -> anyhow::Result<()> {
    let mut docs = load(&args.files)?;
    // Namespaces first, so the objects in them can be created in the same run.
    docs.sort_by_key(|d| d.kind.kind != "Namespace");
    let mut failed = Vec::new();
    for doc in &docs {
        match apply_one(s, doc).await {
            Ok(outcome) => outln!("{}/{} {outcome}", doc.kind.singular, doc.name()),
            Err(e) if e.is_transport() => {
                return Err(Failure::error(
                    Exit::of_client(&e),
                    format!("{e}\nnothing more was applied"),
                ))
            }
            Err(e) => {
                failed.push(Exit::of_client(&e));
                eprintln!("error: {}: {e}", doc.origin());
            }
        }
    }
    if !failed.is_empty() {
        return Err(Failure::error(
            Exit::common(failed.iter().copied()),
            format!(
                "{} of {} objects could not be applied",
                failed.len(),
                docs.len()
            ),
        ));
    }
    Ok(())
}

/// Create the object, or replace it at its current version; a conflict re-reads.
async fn apply_one(s: &Session, doc: &Document) -> Result<&'static str, client::ClientError> {
    let api = s.api(doc.kind, doc.namespace());
    let mut attempts = 0;
    loop {
        attempts += 1;
        let Some(current) = api.get_opt(doc.name()).await? else {
            match api.create(&doc.object).await {
                Ok(_) => return Ok("created"),
                Err(e) if e.code() == Some(409) && attempts < 5 => continue,
                Err(e) => return Err(e),
            }
        };
        let version = current["metadata"]["resourceVersion"].clone();
        let mut desired = doc.object.clone();
        desired["metadata"]["resourceVersion"] = version.clone();
        match api.replace(doc.name(), &desired).await {
            Ok(updated) if updated["metadata"]["resourceVersion"] == version => {
                return Ok("unchanged")
            }
            Ok(_) => return Ok("configured"),
            Err(e) if (e.is_conflict() || e.is_not_found()) && attempts < 5 => continue,
            Err(e) => return Err(e),
        }
    }
}
