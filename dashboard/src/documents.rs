//! The apply form's manifest reader: the text a user pasted or uploaded (YAML with
//! several documents, JSON, or an Oakestra SLA) as the objects to apply, each with the
//! API path it is applied at and where its fields are written, so that the API's
//! validation errors (`details.causes[].field`) can be shown at their lines.
//!
//! It checks only what it needs to find the path (`apiVersion`, `kind`,
//! `metadata.name`); the objects' validation is the API's, at the apply. Pure: no IO.

use std::collections::BTreeMap;

use crds::KindInfo;
use serde::Serialize;
use serde_json::Value;

/// One object to apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    /// The 1-based position of the document in the text it came from.
    pub document: usize,
    /// The line the document starts at (1-based).
    pub line: usize,
    /// `apiVersion` of the object.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Its kind.
    pub kind: &'static str,
    /// `metadata.name`.
    pub name: String,
    /// Its namespace (`default` when a namespaced object names none); `None` for
    /// cluster-scoped kinds.
    pub namespace: Option<String>,
    /// Where it is applied: the object's API path.
    pub path: String,
    /// The object, as written (or as the SLA maps to it).
    pub object: Value,
    /// The line of each field written in the document, by the API's field path
    /// (`spec.template.ports[0].hostPort`); empty for objects an SLA maps to and for
    /// JSON.
    pub fields: BTreeMap<String, usize>,
    /// Whether the object comes from an Oakestra SLA.
    pub sla: bool,
}

/// Something in the text that keeps it from being applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// The document (1-based), when the problem is in one.
    pub document: Option<usize>,
    /// The line (1-based), when known.
    pub line: Option<usize>,
    /// The column (1-based), when known.
    pub column: Option<usize>,
    /// The field, when the problem is about one (`metadata.name`).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem of the whole text.
    pub fn whole(message: &str) -> Problem {
        Problem {
            document: None,
            line: None,
            column: None,
            field: None,
            message: message.to_string(),
        }
    }
}

/// The API path of object `name` of `kind` in `namespace` (ignored for cluster-scoped
/// kinds).
pub fn api_path(kind: &KindInfo, namespace: Option<&str>, name: &str) -> String {
    let group = if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    };
    match namespace {
        Some(ns) if kind.namespaced => format!("{group}/namespaces/{ns}/{}/{name}", kind.plural),
        _ => format!("{group}/{}/{name}", kind.plural),
    }
}

/// Every object of `text`, Namespaces first (so the objects in them can follow), else
/// in the order written; or every problem found. SLAs (a document with `sla_version` or
/// `applications`, [`sla::is_sla`]) are read as the objects [`sla::convert`] maps them
/// to, with `options`; a `List` as its items.
pub fn read(text: &str, options: &sla::Options) -> Result<Vec<Document>, Vec<Problem>> {
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    for source in sources(text) {
        let value = match source.value {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let at = |field: Option<&str>, message: String| Problem {
            document: Some(source.document),
            line: Some(
                field
                    .and_then(|f| line_of(&source.fields, f))
                    .unwrap_or(source.line),
            ),
            column: None,
            field: field.map(String::from),
            message,
        };
        let (objects, from_sla) = if sla::is_sla(&value) {
            match sla::convert(&value, options) {
                Ok(converted) => (converted.objects(), true),
                Err(errors) => {
                    problems.extend(errors.iter().map(|e| at(None, e.to_string())));
                    continue;
                }
            }
        } else if value.get("kind").and_then(Value::as_str) == Some("List") {
            (
                value["items"].as_array().cloned().unwrap_or_default(),
                false,
            )
        } else {
            (vec![value], false)
        };
        for object in objects {
            match locate(&object) {
                Ok((kind, name, namespace)) => documents.push(Document {
                    document: source.document,
                    line: source.line,
                    api_version: kind.api_version(),
                    kind: kind.kind,
                    path: api_path(kind, namespace.as_deref(), &name),
                    name,
                    namespace,
                    object,
                    fields: if from_sla {
                        BTreeMap::new()
                    } else {
                        source.fields.clone()
                    },
                    sla: from_sla,
                }),
                Err((field, message)) => problems.push(at(Some(field), message)),
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if documents.is_empty() {
        return Err(vec![Problem::whole(
            "no objects: paste or upload a manifest (YAML or JSON) or an Oakestra SLA",
        )]);
    }
    // Stable: the order written stays within each group.
    documents.sort_by_key(|d| d.kind != "Namespace");
    Ok(documents)
}

/// The kind, name and namespace of an object, or the field that keeps them from being
/// known and why.
fn locate(object: &Value) -> Result<(&'static KindInfo, String, Option<String>), (&str, String)> {
    if !object.is_object() {
        return Err((
            "",
            "neither a manifest (an object with apiVersion and kind) nor an Oakestra SLA (sla_version and applications)".into(),
        ));
    }
    let text = |field: &'static str, pointer: &str| -> Result<String, (&str, String)> {
        match object.pointer(pointer) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            None | Some(Value::Null) => Err((field, format!("{field}: required"))),
            Some(_) => Err((field, format!("{field}: must be a non-empty string"))),
        }
    };
    let api_version = text("apiVersion", "/apiVersion")?;
    let kind_name = text("kind", "/kind")?;
    let kind = crds::kind_by_gvk(&api_version, &kind_name).ok_or_else(|| {
        let known: Vec<String> = crds::KINDS
            .iter()
            .map(|k| format!("{} {}", k.api_version(), k.kind))
            .collect();
        (
            "kind",
            format!(
                "kind: unknown kind {kind_name:?} of apiVersion {api_version:?}; known kinds: {}",
                known.join(", ")
            ),
        )
    })?;
    let name = text("metadata.name", "/metadata/name")?;
    let namespace = kind.namespaced.then(|| {
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .unwrap_or("default")
            .to_string()
    });
    Ok((kind, name, namespace))
}

/// The line of `field` in `fields`, or of the closest enclosing field written
/// (`spec.template.image`, missing, is shown at `spec.template`).
pub fn line_of(fields: &BTreeMap<String, usize>, field: &str) -> Option<usize> {
    let mut field = field.trim_start_matches('.');
    loop {
        if let Some(line) = fields.get(field) {
            return Some(*line);
        }
        let cut = field.rfind(['.', '['])?;
        field = &field[..cut];
    }
}

/// One document of the text, parsed.
struct Source {
    document: usize,
    line: usize,
    value: Result<Value, Problem>,
    fields: BTreeMap<String, usize>,
}

/// The documents of `text`: one JSON value when it starts with `{` or `[`, else the
/// YAML documents between `---` lines.
fn sources(text: &str) -> Vec<Source> {
    if text.trim_start().starts_with(['{', '[']) {
        let value = serde_json::from_str::<Value>(text).map_err(|e| Problem {
            document: Some(1),
            line: Some(e.line()),
            column: Some(e.column()),
            field: None,
            message: format!("invalid JSON: {e}"),
        });
        return vec![Source {
            document: 1,
            line: 1,
            value,
            fields: BTreeMap::new(),
        }];
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    // Each part: the line it starts at (0-based) and its lines; a marker line's text
    // after `---` belongs to the document it starts.
    let mut parts: Vec<(usize, Vec<&str>)> = vec![(0, Vec::new())];
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = document_marker(line) {
            parts.push((i, vec![rest]));
        } else if line.trim_end() == "..." {
            parts.push((i, vec![""]));
        } else if let Some((_, part)) = parts.last_mut() {
            part.push(line);
        }
    }
    for (start, part) in parts {
        if part
            .iter()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let document = out.len() + 1;
        let body = part.join("\n");
        let value = yaml_serde::from_str::<Value>(&body).map_err(|e| {
            let location = e.location();
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message);
            Problem {
                document: Some(document),
                line: location.as_ref().map(|l| start + l.line()),
                column: location.as_ref().map(|l| l.column()),
                field: None,
                message: format!("invalid YAML: {message}"),
            }
        });
        // The document's first line: past a marker line that holds nothing else.
        let first = match part.first() {
            Some(l) if l.trim().is_empty() && start > 0 => start + 2,
            _ => start + 1,
        };
        out.push(Source {
            document,
            line: first,
            value,
            fields: field_lines(&part, start + 1),
        });
    }
    out
}

/// The text after a document marker (`---`, `--- !tag …`), if `line` is one.
fn document_marker(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("---")?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then(|| rest.trim())
}

/// A container open at a line: a key whose value is on the lines below, or an item of
/// a sequence; `col` is the column of the key or of the item's `-`.
enum Open {
    Key {
        col: usize,
        path: String,
        items: usize,
    },
    Item {
        col: usize,
        path: String,
        items: usize,
    },
}

/// Where each field of a block-style YAML document is written: the API's field path
/// (`spec.template.ports[0].hostPort`) → the line, counting the first of `lines` as
/// line `first`. Flow collections on one line (`metadata: {name: web}`) are read
/// too; a block scalar's lines are skipped. Anything it does not understand it leaves
/// out: the page then shows an error at the closest field it knows ([`line_of`]).
pub fn field_lines(lines: &[&str], first: usize) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    let mut stack: Vec<Open> = Vec::new();
    // Inside a block scalar (`|`, `>`) of a key at this column.
    let mut block: Option<usize> = None;
    for (i, raw) in lines.iter().enumerate() {
        let line = first + i;
        let text = strip_comment(raw);
        if text.trim().is_empty() {
            continue;
        }
        let indent = text.len() - text.trim_start_matches(' ').len();
        if let Some(b) = block {
            if indent > b {
                continue;
            }
            block = None;
        }
        let (mut col, mut rest) = (indent, text[indent..].trim_end());
        loop {
            if rest == "-" || rest.starts_with("- ") {
                while let Some(top) = stack.last() {
                    match top {
                        Open::Key { col: c, .. } if *c <= col => break,
                        Open::Item { col: c, .. } if *c < col => break,
                        _ => {
                            stack.pop();
                        }
                    }
                }
                let path = match stack.last_mut() {
                    Some(Open::Key { path, items, .. } | Open::Item { path, items, .. }) => {
                        *items += 1;
                        format!("{path}[{}]", *items - 1)
                    }
                    None => format!("[{}]", out.keys().filter(|k| k.starts_with('[')).count()),
                };
                out.entry(path.clone()).or_insert(line);
                stack.push(Open::Item {
                    col,
                    path: path.clone(),
                    items: 0,
                });
                let after = &rest[1..];
                let value = after.trim_start();
                if value.is_empty() {
                    break;
                }
                if value.starts_with(['{', '[']) {
                    flow(value, &path, line, &mut out);
                    break;
                }
                col += 1 + (after.len() - value.len());
                rest = value;
                continue;
            }
            let Some((key, value)) = split_key(rest) else {
                break;
            };
            while let Some(top) = stack.last() {
                match top {
                    Open::Key { col: c, .. } | Open::Item { col: c, .. } if *c < col => break,
                    _ => {
                        stack.pop();
                    }
                }
            }
            let path = match stack.last() {
                Some(Open::Key { path, .. } | Open::Item { path, .. }) => format!("{path}.{key}"),
                None => key,
            };
            out.entry(path.clone()).or_insert(line);
            let value = skip_properties(value.trim());
            if value.is_empty() {
                stack.push(Open::Key {
                    col,
                    path,
                    items: 0,
                });
            } else if value.starts_with(['|', '>']) {
                block = Some(col);
            } else if value.starts_with(['{', '[']) {
                flow(value, &path, line, &mut out);
            }
            break;
        }
    }
    out
}

/// `value` past an anchor (`&a`) or tag (`!!str`) in front of it.
fn skip_properties(mut value: &str) -> &str {
    while value.starts_with(['&', '!']) {
        value = value
            .split_once(' ')
            .map(|(_, r)| r.trim_start())
            .unwrap_or("");
    }
    value
}

/// `line` without a comment (`#` at the start or after a blank, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return &line[..i],
            None => {}
        }
        previous = c;
    }
    line
}

/// `key: value` (or `key:`) split at the key's colon, the key unquoted; `None` for a
/// line that is not a mapping entry.
fn split_key(text: &str) -> Option<(String, &str)> {
    if let Some(q) = text.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = text[1..].find(q)? + 1;
        let after = text[end + 1..].trim_start();
        let value = after.strip_prefix(':')?;
        return (value.is_empty() || value.starts_with(' '))
            .then(|| (text[1..end].to_string(), value));
    }
    if text.starts_with(['{', '[', '#', '&', '*', '!', '|', '>']) {
        return None;
    }
    let bytes = text.as_bytes();
    let at = (0..bytes.len()).find(|&i| {
        bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t')
    })?;
    let key = text[..at].trim_end();
    (!key.is_empty()).then(|| (key.to_string(), &text[at + 1..]))
}

/// Record the fields of a flow collection (`{a: 1, b: [x, {c: 2}]}`) written on `line`
/// under `path`. A collection that does not close on the line is read as far as it goes.
fn flow(text: &str, path: &str, line: usize, out: &mut BTreeMap<String, usize>) {
    let chars: Vec<char> = text.chars().collect();
    let mut at = 0;
    flow_value(&chars, &mut at, path, line, out);
}

fn flow_value(
    chars: &[char],
    at: &mut usize,
    path: &str,
    line: usize,
    out: &mut BTreeMap<String, usize>,
) {
    let skip_blank = |at: &mut usize| {
        while *at < chars.len() && chars[*at].is_whitespace() {
            *at += 1;
        }
    };
    skip_blank(at);
    match chars.get(*at) {
        Some('{') => {
            *at += 1;
            loop {
                skip_blank(at);
                match chars.get(*at) {
                    None => return,
                    Some('}') => {
                        *at += 1;
                        return;
                    }
                    Some(',') => {
                        *at += 1;
                        continue;
                    }
                    _ => {}
                }
                let key = flow_scalar(chars, at, true);
                let key = key.trim().trim_matches(['"', '\'']).to_string();
                let field = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if !key.is_empty() {
                    out.entry(field.clone()).or_insert(line);
                }
                skip_blank(at);
                if chars.get(*at) == Some(&':') {
                    *at += 1;
                    flow_value(chars, at, &field, line, out);
                }
            }
        }
        Some('[') => {
            *at += 1;
            let mut index = 0;
            loop {
                skip_blank(at);
                match chars.get(*at) {
                    None => return,
                    Some(']') => {
                        *at += 1;
                        return;
                    }
                    Some(',') => {
                        *at += 1;
                        continue;
                    }
                    _ => {}
                }
                let item = format!("{path}[{index}]");
                out.entry(item.clone()).or_insert(line);
                flow_value(chars, at, &item, line, out);
                index += 1;
            }
        }
        _ => {
            flow_scalar(chars, at, false);
        }
    }
}

/// A scalar of a flow collection, up to its end (`,`, `}`, `]`, or `:` for a key),
/// quotes respected.
fn flow_scalar(chars: &[char], at: &mut usize, key: bool) -> String {
    let mut text = String::new();
    let mut quote: Option<char> = None;
    while let Some(&c) = chars.get(*at) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if matches!(c, ',' | '}' | ']') => break,
            None if key && c == ':' => break,
            None => {}
        }
        text.push(c);
        *at += 1;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(text: &str) -> BTreeMap<String, usize> {
        let l: Vec<&str> = text.lines().collect();
        field_lines(&l, 1)
    }

    #[test]
    fn fields_of_block_yaml_are_found_by_the_apis_paths() {
        let text = "\
apiVersion: oakestra.io/v1   # a comment
kind: Service
metadata:
  name: web
  labels: {app: web, 'tier': \"front # not a comment\"}
spec:
  replicas: 2
  template:
    runtime: process
    command: [-c, 'echo hi']
    ports:
    - containerPort: 80
      hostPort: 8080
    -   containerPort: 81
    env:
      - name: A
        valueFrom:
          configMapKeyRef: {name: c, key: k}
      - name: B
        value: |
          line: one
          two: 2
    resources:
      cpuMillicores: 100
status: {}
";
        let f = lines(text);
        let want = [
            ("apiVersion", 1),
            ("kind", 2),
            ("metadata", 3),
            ("metadata.name", 4),
            ("metadata.labels.app", 5),
            ("metadata.labels.tier", 5),
            ("spec.replicas", 7),
            ("spec.template.runtime", 9),
            ("spec.template.command[1]", 10),
            ("spec.template.ports[0]", 12),
            ("spec.template.ports[0].containerPort", 12),
            ("spec.template.ports[0].hostPort", 13),
            ("spec.template.ports[1].containerPort", 14),
            ("spec.template.env[0].name", 16),
            ("spec.template.env[0].valueFrom.configMapKeyRef.key", 18),
            ("spec.template.env[1].value", 20),
            ("spec.template.resources.cpuMillicores", 24),
            ("status", 25),
        ];
        for (field, line) in want {
            assert_eq!(f.get(field), Some(&line), "{field} in {f:#?}");
        }
        assert!(
            !f.keys().any(|k| k.contains("line") || k.contains("two")),
            "a block scalar's lines are not fields: {f:#?}"
        );
    }

    #[test]
    fn an_error_goes_to_its_field_or_the_closest_one_written() {
        let f = lines("spec:\n  template:\n    image: x\n  replicas: -1\n");
        for (field, want) in [
            ("spec.replicas", Some(4)),
            (".spec.replicas", Some(4)),
            ("spec.template.ports[0].hostPrt", Some(2)),
            ("spec.template.image", Some(3)),
            ("metadata.name", None),
        ] {
            assert_eq!(line_of(&f, field), want, "{field}");
        }
    }

    #[test]
    fn documents_are_numbered_and_located_in_the_whole_text() {
        let text = "\
# leading comment
---
apiVersion: oakestra.io/v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  replicas: 3
  template: {runtime: process, executable: /bin/true}
---
---
apiVersion: v1
kind: Namespace
metadata:
  name: demo
";
        let docs = read(text, &sla::Options::default()).unwrap();
        assert_eq!(docs.len(), 2);
        // Namespaces first.
        assert_eq!(
            (docs[0].kind, docs[0].document, docs[0].line),
            ("Namespace", 2, 11)
        );
        assert_eq!(docs[0].path, "/api/v1/namespaces/demo");
        assert_eq!(docs[0].namespace, None);
        assert_eq!(docs[0].fields["metadata.name"], 14);
        assert_eq!((docs[1].document, docs[1].line), (1, 3));
        assert_eq!(
            docs[1].path,
            "/apis/oakestra.io/v1/namespaces/demo/services/web"
        );
        assert_eq!(docs[1].fields["spec.replicas"], 7);
        assert_eq!(docs[1].fields["spec.template.executable"], 8);
        assert_eq!(docs[1].object["spec"]["replicas"], 3);
    }

    #[test]
    fn problems_name_the_document_the_line_and_the_field() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: oakestra.io/v1\nkind: Cluster\nmetadata: [unclosed\n";
        let p = read(text, &sla::Options::default()).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].document, Some(2));
        assert!(p[0].message.starts_with("invalid YAML"), "{}", p[0].message);
        assert!(p[0].line.unwrap() >= 7, "{:?}", p[0].line);

        let text = "apiVersion: oakestra.io/v1\nkind: Service\nmetadata:\n  labels: {a: b}\nspec: {}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n";
        let p = read(text, &sla::Options::default()).unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(
            (p[0].document, p[0].line, p[0].field.as_deref()),
            (Some(1), Some(3), Some("metadata.name"))
        );
        assert_eq!(p[0].message, "metadata.name: required");
        assert_eq!((p[1].document, p[1].line), (Some(2), Some(8)));
        assert!(
            p[1].message.contains("unknown kind \"Deployment\""),
            "{}",
            p[1].message
        );

        let p = read("# nothing\n", &sla::Options::default()).unwrap_err();
        assert!(p[0].message.starts_with("no objects"), "{p:?}");
        let p = read("{\"a\": ", &sla::Options::default()).unwrap_err();
        assert!(p[0].message.starts_with("invalid JSON"), "{p:?}");
    }

    #[test]
    fn an_sla_is_read_as_the_objects_it_maps_to() {
        let sla = json!({
            "sla_version": "v2.0",
            "customerID": "Admin",
            "applications": [{
                "applicationID": "",
                "application_name": "clientsrvr",
                "application_namespace": "test",
                "application_desc": "",
                "microservices": [{
                    "microserviceID": "",
                    "microservice_name": "curl",
                    "microservice_namespace": "test",
                    "virtualization": "container",
                    "code": "docker.io/curlimages/curl:7.82.0",
                    "memory": 100,
                    "vcpus": 1,
                }]
            }]
        });
        let docs = read(&sla.to_string(), &sla::Options::default()).unwrap();
        assert!(docs.iter().all(|d| d.sla && d.fields.is_empty()));
        assert_eq!(docs[0].kind, "Namespace");
        let service = docs.iter().find(|d| d.kind == "Service").unwrap();
        assert!(
            service.path.starts_with("/apis/oakestra.io/v1/namespaces/"),
            "{}",
            service.path
        );
        let mut broken = sla.clone();
        broken["applications"][0]["microservices"][0]
            .as_object_mut()
            .unwrap()
            .remove("code");
        let p = read(&broken.to_string(), &sla::Options::default()).unwrap_err();
        assert!(
            p.iter().any(|p| p.message.contains("code")),
            "the SLA's own field is named: {p:?}"
        );
    }

    #[test]
    fn a_list_is_read_as_its_items() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: oakestra.io/v1\n  kind: Cluster\n  metadata: {name: c}\n";
        let docs = read(text, &sla::Options::default()).unwrap();
        assert_eq!(
            docs.iter().map(|d| d.path.as_str()).collect::<Vec<_>>(),
            ["/api/v1/namespaces/a", "/apis/oakestra.io/v1/clusters/c"]
        );
    }
}
