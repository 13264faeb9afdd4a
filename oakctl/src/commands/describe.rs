//! `oakctl describe KIND NAME`: one object for a person to read: metadata, spec and
//! status as YAML, its conditions as a table, and its recent events.

use client::ListParams;
use crds::KindInfo;
use serde_json::Value;

use crate::commands::{kind, Session};
use crate::print;

/// The arguments of `oakctl describe`.
#[derive(clap::Args)]
pub struct Args {
    /// Kind: plural, singular or short name (svc, inst, no, cl, ev, ns).
    kind: String,
    /// Name of the object.
    name: String,
}

/// Print the object, its conditions and (unless it is an Event) its events.
pub async fn run(s: &Session, args: Args) -> anyhow::Result<()> {
    let kind = kind(&args.kind)?;
    let name = args.name.as_str();
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
    print_data(kind, &o);
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
    if kind.kind == "Service" {
        print_endpoints(s, &o).await?;
    }
    if kind.kind != "Event" {
        print_events(s, kind, &o).await?;
    }
    Ok(())
}

/// A `ConfigMap`'s keys and values, or a Secret's type and keys with the size of each
/// value (never the value, as `kubectl describe secret`).
fn print_data(kind: &KindInfo, o: &Value) {
    let keys = |field: &str| {
        o.get(field)
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty())
            .cloned()
    };
    match kind.kind {
        "ConfigMap" => {
            for (title, field) in [("Data", "data"), ("Binary Data", "binaryData")] {
                let Some(map) = keys(field) else { continue };
                outln!("{title}:");
                for (key, value) in map {
                    let value = value.as_str().unwrap_or_default();
                    match field {
                        "data" => outln!("  {key}:\n{}", indent(&indent(value))),
                        _ => outln!("  {key}: {} bytes (base64)", value.len()),
                    }
                }
            }
        }
        "Secret" => {
            let field = |label: &str, value: String| outln!("{:<18}{value}", format!("{label}:"));
            field("Type", o["type"].as_str().unwrap_or("Opaque").to_string());
            outln!("Data:");
            match keys("data") {
                None => outln!("  <none>"),
                Some(map) => {
                    use base64::Engine as _;
                    for (key, value) in map {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(value.as_str().unwrap_or_default())
                            .map(|b| b.len())
                            .unwrap_or_default();
                        outln!("  {key}: {bytes} bytes");
                    }
                }
            }
        }
        _ => {}
    }
}

/// A Service's endpoints: where its service IPs send connections.
async fn print_endpoints(s: &Session, svc: &Value) -> anyhow::Result<()> {
    let kind = crds::kind_by_name("endpoints").expect("endpoints are served");
    let ns = svc["metadata"]["namespace"].as_str();
    let name = svc["metadata"]["name"].as_str().unwrap_or_default();
    outln!("Endpoints:");
    let Some(e) = s.client.dynamic(kind, ns).get_opt(name).await? else {
        outln!("  <none>");
        return Ok(());
    };
    let entries = e
        .pointer("/spec/endpoints")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty());
    let Some(entries) = entries else {
        outln!("  <none>");
        return Ok(());
    };
    let mut rows = vec![["INSTANCE", "IP", "CLUSTER", "NODE", "READY"]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    for entry in entries {
        rows.push(
            ["/instance", "/ip", "/cluster", "/node", "/ready"]
                .iter()
                .map(|p| crds::column_value(entry, p))
                .collect(),
        );
    }
    outln!("{}", indent(&print::table(rows)));
    Ok(())
}

/// `text` with every line indented by two spaces.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last 20 events about the object, oldest first.
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
