//! Output: tables like kubectl's, YAML, JSON and names.

use chrono::Utc;
use comfy_table::{presets::NOTHING, Table};
use crds::KindInfo;
use serde_json::Value;

/// The output formats of `get -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The table with the kind's extra columns.
    Wide,
    /// The objects as YAML (several as a `List`).
    Yaml,
    /// The objects as JSON (several as a `List`).
    Json,
    /// `kind/name` per object.
    Name,
}

fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

/// The header of a table for `kind`.
pub fn header(kind: &KindInfo, wide: bool, namespaces: bool) -> Vec<String> {
    let mut h = Vec::new();
    if namespaces && kind.namespaced {
        h.push("NAMESPACE".to_string());
    }
    h.push("NAME".into());
    h.extend(kind.columns.iter().map(|(c, _)| c.to_string()));
    if wide {
        h.extend(kind.wide_columns.iter().map(|(c, _)| c.to_string()));
    }
    h.push("AGE".into());
    h
}

/// One table row for an object.
pub fn row(kind: &KindInfo, o: &Value, wide: bool, namespaces: bool) -> Vec<String> {
    let mut r = Vec::new();
    if namespaces && kind.namespaced {
        r.push(
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    r.push(name_of(o).to_string());
    r.extend(kind.columns.iter().map(|(_, p)| crds::column_value(o, p)));
    if wide {
        r.extend(
            kind.wide_columns
                .iter()
                .map(|(_, p)| crds::column_value(o, p)),
        );
    }
    r.push(crds::age(o, Utc::now()));
    r
}

/// Aligned columns without borders.
pub fn table(rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    for r in rows {
        t.add_row(r);
    }
    for column in t.column_iter_mut() {
        column.set_padding((0, 3));
    }
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Print objects in the chosen format.
pub fn objects(
    kind: &KindInfo,
    items: &[Value],
    output: Option<Output>,
    namespaces: bool,
) -> anyhow::Result<String> {
    Ok(match output {
        None | Some(Output::Wide) => {
            let wide = output == Some(Output::Wide);
            let mut rows = vec![header(kind, wide, namespaces)];
            rows.extend(items.iter().map(|o| row(kind, o, wide, namespaces)));
            table(rows)
        }
        Some(Output::Name) => items
            .iter()
            .map(|o| format!("{}/{}", kind.singular, name_of(o)))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(Output::Json) => serde_json::to_string_pretty(&as_one(items))?,
        Some(Output::Yaml) => yaml_serde::to_string(&as_one(items))?
            .trim_end()
            .to_string(),
    })
}

fn as_one(items: &[Value]) -> Value {
    match items {
        [one] => one.clone(),
        many => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": many}),
    }
}

/// YAML of `value` indented by `indent` spaces.
pub fn indented_yaml(value: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    yaml_serde::to_string(value)
        .unwrap_or_default()
        .lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
