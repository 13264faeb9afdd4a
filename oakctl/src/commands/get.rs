//! `oakctl get KIND [NAME]`: a table (or YAML, JSON, names) of objects, and with `-w`
//! every change after that, one row each.

use client::{ListParams, WatchEvent};
use futures::StreamExt;

use crate::commands::{kind, Session};
use crate::print::{self, Output};

/// The arguments of `oakctl get`.
#[derive(clap::Args)]
pub struct Args {
    /// Kind: plural, singular or short name (svc, inst, no, cl, ev, ns).
    kind: String,
    /// The one object to show (default: all of the kind).
    name: Option<String>,
    /// Output format (default: a table).
    #[arg(short, long, value_enum)]
    output: Option<Output>,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// After listing, print changes as they happen.
    #[arg(short, long)]
    watch: bool,
}

/// List (or get one), print, and with `--watch` follow the changes until the server
/// ends the watch.
pub async fn run(s: &Session, args: Args) -> anyhow::Result<()> {
    let kind = kind(&args.kind)?;
    let all = args.all_namespaces;
    let output = args.output;
    let api = if all {
        s.client.dynamic(kind, None)
    } else {
        s.api(kind, None)
    };
    let mut params = ListParams {
        label_selector: args.selector,
        ..Default::default()
    };
    let (items, version) = match &args.name {
        Some(n) => {
            let o = api.get(n).await?;
            params.field_selector = Some(format!("metadata.name={n}"));
            let v = o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (vec![o], v)
        }
        None => api.list_all(&params).await?,
    };
    let namespaces = all && kind.namespaced;
    if items.is_empty() && !args.watch {
        match (all, kind.namespaced) {
            (false, true) => eprintln!("No resources found in {} namespace.", s.namespace),
            _ => eprintln!("No resources found"),
        }
        return Ok(());
    }
    if !items.is_empty() {
        outln!("{}", print::objects(kind, &items, output, namespaces)?);
    }
    if !args.watch {
        return Ok(());
    }
    if items.is_empty() && matches!(output, None | Some(Output::Wide)) {
        outln!(
            "{}",
            print::table(vec![print::header(kind, output.is_some(), namespaces)])
        );
    }
    params.resource_version = Some(version);
    let mut events = api.watch(&params).await?;
    while let Some(event) = events.next().await {
        let object = match event? {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
            WatchEvent::Bookmark(_) => continue,
        };
        let line = match output {
            None | Some(Output::Wide) => {
                let row = print::row(kind, &object, output.is_some(), namespaces);
                let table =
                    print::table(vec![print::header(kind, output.is_some(), namespaces), row]);
                table.lines().nth(1).unwrap_or_default().to_string()
            }
            other => print::objects(kind, &[object], other, namespaces)?,
        };
        outln!("{line}");
    }
    Ok(())
}
