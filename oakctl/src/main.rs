//! `oakctl`: the command-line client of the Oakestra API, with kubectl's habits.

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

mod config;
mod manifest;
mod print;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use client::{Client, DynamicApi, ListParams, WatchEvent};
use crds::KindInfo;
use futures::StreamExt;
use serde_json::Value;

use crate::print::Output;

#[derive(Parser)]
#[command(
    name = "oakctl",
    version,
    about = "Command-line client of the Oakestra API"
)]
struct Cli {
    /// API server URL (default: the current context, else http://127.0.0.1:10000).
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

#[derive(Subcommand)]
enum Command {
    /// Create or update the objects of manifests (files, directories, or - for stdin).
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// List objects, or show one.
    Get {
        /// Kind: plural, singular or short name (svc, inst, no, cl, ev, ns).
        kind: String,
        name: Option<String>,
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
    },
    /// Show one object in detail: spec, status, conditions and recent events.
    Describe { kind: String, name: String },
    /// Delete objects by kind and name, or those of manifests.
    Delete {
        kind: Option<String>,
        names: Vec<String>,
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Wait until the objects are gone.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Print the output of an Instance's workload (from the agent of its node).
    Logs {
        /// Instance name.
        name: String,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Manage contexts in the config file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Add or change a context.
    SetContext {
        name: String,
        #[arg(long)]
        server: String,
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Make a context the current one.
    UseContext { name: String },
    /// Print the config file.
    View,
}

struct Session {
    client: Client,
    namespace: String,
}

fn kind(name: &str) -> anyhow::Result<&'static KindInfo> {
    crds::kind_by_name(name).with_context(|| {
        let known: Vec<&str> = crds::KINDS.iter().map(|k| k.plural).collect();
        format!("unknown kind {name:?}; known kinds: {}", known.join(", "))
    })
}

fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = config::Config::load()?;
    if let Command::Config { action } = cli.command {
        return configure(config, action);
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
    match cli.command {
        Command::Apply { files } => apply(&session, &files).await,
        Command::Get {
            kind: k,
            name,
            output,
            selector,
            all_namespaces,
            watch,
        } => {
            get(
                &session,
                kind(&k)?,
                name,
                output,
                selector,
                all_namespaces,
                watch,
            )
            .await
        }
        Command::Describe { kind: k, name } => describe(&session, kind(&k)?, &name).await,
        Command::Delete {
            kind: k,
            names,
            files,
            wait,
            timeout,
        } => {
            delete(
                &session,
                k,
                names,
                files,
                wait,
                Duration::from_secs(timeout),
            )
            .await
        }
        Command::Logs { name, tail } => logs(&session, &name, tail).await,
        Command::Config { .. } => unreachable!("handled above"),
    }
}

fn configure(mut config: config::Config, action: ConfigAction) -> anyhow::Result<()> {
    match action {
        ConfigAction::SetContext {
            name,
            server,
            namespace,
        } => {
            Client::new(&server)?;
            config.contexts.retain(|c| c.name != name);
            config.contexts.push(config::Context {
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
        ConfigAction::UseContext { name } => {
            config.context(Some(&name))?;
            config.current_context = Some(name.clone());
            config.save()?;
            outln!("switched to context {name:?}");
        }
        ConfigAction::View => out!("{}", serde_yaml::to_string(&config)?),
    }
    Ok(())
}

impl Session {
    fn api(&self, kind: &'static KindInfo, ns: Option<&str>) -> DynamicApi {
        self.client
            .dynamic(kind, Some(ns.unwrap_or(&self.namespace)))
    }
}

fn load(files: &[PathBuf]) -> anyhow::Result<Vec<manifest::Document>> {
    manifest::load(files).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("{}\nnothing was applied", lines.join("\n"))
    })
}

async fn apply(s: &Session, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut docs = load(files)?;
    // Namespaces first, so the objects in them can be created in the same run.
    docs.sort_by_key(|d| d.kind.kind != "Namespace");
    let mut failed = 0;
    for doc in &docs {
        match apply_one(s, doc).await {
            Ok(outcome) => outln!("{}/{} {outcome}", doc.kind.singular, doc.name()),
            Err(e) if e.is_transport() => bail!("{e}\nnothing more was applied"),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", doc.origin());
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} objects could not be applied", docs.len());
    }
    Ok(())
}

/// Create the object, or replace it at its current version; a conflict re-reads.
async fn apply_one(
    s: &Session,
    doc: &manifest::Document,
) -> Result<&'static str, client::ClientError> {
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

async fn get(
    s: &Session,
    kind: &'static KindInfo,
    name: Option<String>,
    output: Option<Output>,
    selector: Option<String>,
    all: bool,
    watch: bool,
) -> anyhow::Result<()> {
    let api = if all {
        s.client.dynamic(kind, None)
    } else {
        s.api(kind, None)
    };
    let mut params = ListParams {
        label_selector: selector,
        ..Default::default()
    };
    let (items, version) = match &name {
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
    if items.is_empty() && !watch {
        match (all, kind.namespaced) {
            (false, true) => eprintln!("No resources found in {} namespace.", s.namespace),
            _ => eprintln!("No resources found"),
        }
        return Ok(());
    }
    if !items.is_empty() {
        outln!("{}", print::objects(kind, &items, output, namespaces)?);
    }
    if !watch {
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
                let mut table =
                    print::table(vec![print::header(kind, output.is_some(), namespaces), row]);
                table = table.lines().nth(1).unwrap_or_default().to_string();
                table
            }
            other => print::objects(kind, &[object], other, namespaces)?,
        };
        outln!("{line}");
    }
    Ok(())
}

async fn describe(s: &Session, kind: &'static KindInfo, name: &str) -> anyhow::Result<()> {
    let o = s.api(kind, None).get(name).await?;
    let meta = &o["metadata"];
    let pairs = |v: &Value| -> String {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".into())
    };
    let field = |label: &str, value: String| outln!("{:<18}{value}", format!("{label}:"));
    field("Name", name.to_string());
    if kind.namespaced {
        field(
            "Namespace",
            meta["namespace"].as_str().unwrap_or_default().to_string(),
        );
    }
    field("Kind", kind.kind.to_string());
    field("Labels", pairs(&meta["labels"]));
    let mut annotations = meta["annotations"].clone();
    if let Some(a) = annotations.as_object_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    field("Annotations", pairs(&annotations));
    field(
        "Created",
        format!(
            "{} ({} ago)",
            meta["creationTimestamp"].as_str().unwrap_or_default(),
            crds::age(&o, chrono::Utc::now())
        ),
    );
    field("Generation", meta["generation"].to_string());
    field(
        "Resource Version",
        meta["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    if let Some(f) = meta["finalizers"].as_array() {
        field(
            "Finalizers",
            f.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if let Some(d) = meta["deletionTimestamp"].as_str() {
        field("Deleting Since", d.to_string());
    }
    for (title, section) in [("Spec", "spec"), ("Status", "status")] {
        let mut value = o.get(section).cloned().unwrap_or(Value::Null);
        if let Some(v) = value.as_object_mut() {
            v.remove("conditions");
        }
        if !value.is_null() && value != serde_json::json!({}) {
            outln!("{title}:\n{}", print::indented_yaml(&value, 2));
        }
    }
    if kind.has_status {
        outln!("Conditions:");
        match o
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
        {
            None => outln!("  <none>"),
            Some(conditions) => {
                let mut rows = vec![vec!["TYPE", "STATUS", "REASON", "MESSAGE"]
                    .into_iter()
                    .map(String::from)
                    .collect()];
                for c in conditions {
                    rows.push(
                        ["type", "status", "reason", "message"]
                            .iter()
                            .map(|k| c[*k].as_str().unwrap_or_default().to_string())
                            .collect(),
                    );
                }
                outln!("{}", indent(&print::table(rows)));
            }
        }
    }
    if kind.kind != "Event" {
        print_events(s, kind, &o).await?;
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn print_events(s: &Session, kind: &'static KindInfo, o: &Value) -> anyhow::Result<()> {
    let events_kind = crds::kind_by_name("events").expect("events are served");
    let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = o["metadata"]["name"].as_str().unwrap_or_default();
    let params = ListParams {
        field_selector: Some(format!(
            "involvedObject.kind={},involvedObject.name={name}",
            kind.kind
        )),
        ..Default::default()
    };
    let (mut events, _) = s
        .client
        .dynamic(events_kind, Some(ns))
        .list_all(&params)
        .await?;
    outln!("Events:");
    if events.is_empty() {
        outln!("  <none>");
        return Ok(());
    }
    events.sort_by(|a, b| {
        a["lastTimestamp"]
            .as_str()
            .cmp(&b["lastTimestamp"].as_str())
    });
    let now = chrono::Utc::now();
    let mut rows = vec![["TYPE", "REASON", "AGE", "FROM", "COUNT", "MESSAGE"]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    for e in events.iter().rev().take(20).rev() {
        let last = serde_json::json!({"metadata": {"creationTimestamp": e["lastTimestamp"]}});
        rows.push(vec![
            e["type"].as_str().unwrap_or_default().into(),
            e["reason"].as_str().unwrap_or_default().into(),
            crds::age(&last, now),
            e["source"].as_str().unwrap_or_default().into(),
            e["count"].to_string(),
            e["message"].as_str().unwrap_or_default().into(),
        ]);
    }
    outln!("{}", indent(&print::table(rows)));
    Ok(())
}

async fn delete(
    s: &Session,
    kind_name: Option<String>,
    names: Vec<String>,
    files: Vec<PathBuf>,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut targets: Vec<(&'static KindInfo, Option<String>, String)> = Vec::new();
    if !files.is_empty() {
        if kind_name.is_some() {
            bail!("give either KIND NAME... or -f FILE, not both");
        }
        for d in load(&files)? {
            targets.push((
                d.kind,
                d.namespace().map(String::from),
                d.name().to_string(),
            ));
        }
        // Namespaces last: the server refuses to delete a namespace that still holds objects.
        targets.sort_by_key(|(k, _, _)| k.kind == "Namespace");
    } else {
        let Some(k) = kind_name else {
            bail!("give KIND NAME... or -f FILE")
        };
        let k = kind(&k)?;
        if names.is_empty() {
            bail!("give the name of the {} to delete", k.singular);
        }
        targets.extend(names.into_iter().map(|n| (k, None, n)));
    }
    let mut failed = 0;
    for (kind, ns, name) in &targets {
        match s.api(kind, ns.as_deref()).delete(name, None).await {
            Ok(_) => outln!("{} \"{name}\" deleted", kind.singular),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if wait {
        for (kind, ns, name) in &targets {
            let api = s.api(kind, ns.as_deref());
            let deadline = tokio::time::Instant::now() + timeout;
            eprintln!("waiting for {}/{name} to be gone…", kind.singular);
            while api.get_opt(name).await?.is_some() {
                if tokio::time::Instant::now() > deadline {
                    bail!(
                        "{}/{name} still exists after {timeout:?} (finalizers: {})",
                        kind.singular,
                        api.get_opt(name)
                            .await?
                            .map(|o| o["metadata"]["finalizers"].to_string())
                            .unwrap_or_default()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} deletions failed", targets.len());
    }
    Ok(())
}

/// Follow the Instance to its cluster's API, its node's agent, and read the logs there.
async fn logs(s: &Session, name: &str, tail: Option<usize>) -> anyhow::Result<()> {
    let instance = s.api(kind("instances")?, None).get(name).await?;
    let ns = instance["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let phase = instance
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let Some(cluster) = instance["spec"]["cluster"].as_str() else {
        bail!("instance {name} is not placed on a cluster yet (phase {phase})");
    };
    let Some(node) = instance["spec"]["node"].as_str() else {
        bail!("instance {name} is not bound to a node of cluster {cluster} yet (phase {phase})");
    };
    // At the root, the cluster says where its API is; talking to a cluster API, the
    // nodes are right here.
    let cluster_api = match s
        .client
        .dynamic(kind("clusters")?, None)
        .get_opt(cluster)
        .await?
    {
        Some(c) => match c.pointer("/status/apiEndpoint").and_then(Value::as_str) {
            Some(url) if url != s.client.base() => Client::new(url)?,
            _ => s.client.clone(),
        },
        None => s.client.clone(),
    };
    let node_object = cluster_api.dynamic(kind("nodes")?, None).get(node).await?;
    let Some(agent) = node_object
        .pointer("/status/agentEndpoint")
        .and_then(Value::as_str)
    else {
        bail!("node {node} has not reported an agent endpoint");
    };
    let query = tail.map(|n| format!("?tail={n}")).unwrap_or_default();
    let text = Client::new(agent)?
        .get_text(&format!("/logs/{ns}/{name}{query}"))
        .await?;
    out!("{text}");
    Ok(())
}
