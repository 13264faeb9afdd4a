//! `oakctl delete KIND NAME…` or `-f FILE`: delete objects, and with `--wait` follow a
//! watch on each until it is gone (finalizers may keep an object for a while).

use std::path::PathBuf;
use std::time::Duration;

use client::{DynamicApi, ListParams, WatchEvent};
use crds::KindInfo;
use futures::StreamExt;

use crate::commands::{kind, load, Session};
use crate::exit::{Exit, Failure};

/// The arguments of `oakctl delete`.
#[derive(clap::Args)]
pub struct Args {
    /// Kind: plural, singular or short name (svc, inst, no, cl, ev, ns).
    kind: Option<String>,
    /// Names of the objects of that kind.
    names: Vec<String>,
    /// Delete the objects of these manifests instead.
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// Wait until the objects are gone.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// One object to delete: its kind, namespace (`None`: the session's) and name.
type Target = (&'static KindInfo, Option<String>, String);

/// Delete every target, reporting each; then, with `--wait`, wait for each to be gone.
pub async fn run(s: &Session, args: Args) -> anyhow::Result<()> {
    let targets = targets(args.kind, args.names, &args.files)?;
    let mut failed = Vec::new();
    for (kind, ns, name) in &targets {
        match s.api(kind, ns.as_deref()).delete(name, None).await {
            Ok(_) => outln!("{} \"{name}\" deleted", kind.singular),
            Err(e) => {
                failed.push(Exit::of_client(&e));
                eprintln!("error: {e}");
            }
        }
    }
    if args.wait {
        let timeout = Duration::from_secs(args.timeout);
        for (kind, ns, name) in &targets {
            eprintln!("waiting for {}/{name} to be gone…", kind.singular);
            let api = s.api(kind, ns.as_deref());
            if tokio::time::timeout(timeout, gone(&api, name))
                .await
                .is_err()
            {
                let finalizers = api
                    .get_opt(name)
                    .await?
                    .map(|o| o["metadata"]["finalizers"].to_string())
                    .unwrap_or_default();
                return Err(Failure::error(
                    Exit::Failed,
                    format!(
                        "{}/{name} still exists after {timeout:?} (finalizers: {finalizers})",
                        kind.singular
                    ),
                ));
            }
        }
    }
    if !failed.is_empty() {
        return Err(Failure::error(
            Exit::common(failed.iter().copied()),
            format!("{} of {} deletions failed", failed.len(), targets.len()),
        ));
    }
    Ok(())
}

/// What to delete: the objects of the manifests (namespaces last), or `kind`'s `names`.
fn targets(
    kind_name: Option<String>,
    names: Vec<String>,
    files: &[PathBuf],
) -> anyhow::Result<Vec<Target>> {
    if !files.is_empty() {
        if kind_name.is_some() {
            return Err(Failure::usage(
                "give either KIND NAME... or -f FILE, not both",
            ));
        }
        let mut targets: Vec<Target> = load(files)?
            .into_iter()
            .map(|d| {
                (
                    d.kind,
                    d.namespace().map(String::from),
                    d.name().to_string(),
                )
            })
            .collect();
        // Namespaces last: the server refuses to delete a namespace that still holds objects.
        targets.sort_by_key(|(k, _, _)| k.kind == "Namespace");
        return Ok(targets);
    }
    let Some(k) = kind_name else {
        return Err(Failure::usage("give KIND NAME... or -f FILE"));
    };
    let k = kind(&k)?;
    if names.is_empty() {
        return Err(Failure::usage(format!(
            "give the name of the {} to delete",
            k.singular
        )));
    }
    Ok(names.into_iter().map(|n| (k, None, n)).collect())
}

/// Return once `name` no longer exists: read it, then follow a watch on it from that
/// version until it is deleted. A watch the server ends (or one too old, 410) is started
/// again from a fresh read.
async fn gone(api: &DynamicApi, name: &str) -> anyhow::Result<()> {
    loop {
        let Some(current) = api.get_opt(name).await? else {
            return Ok(());
        };
        let params = ListParams {
            field_selector: Some(format!("metadata.name={name}")),
            resource_version: current["metadata"]["resourceVersion"]
                .as_str()
                .map(String::from),
            ..Default::default()
        };
        let mut events = api.watch(&params).await?;
        while let Some(event) = events.next().await {
            match event {
                Ok(WatchEvent::Deleted(_)) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.is_gone() => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
