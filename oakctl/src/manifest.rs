//! Reading manifests: files, directories and stdin, multi-document YAML and JSON, and
//! Oakestra SLAs (a document with `sla_version` or `applications`), which are read as
//! the Namespaces and Services [`sla`] maps them to. Every error names the file,
//! the document and, for syntax errors, line and column.

use std::path::{Path, PathBuf};

use crds::KindInfo;
use serde::Deserialize;
use serde_json::Value;

/// One object read from a manifest.
#[derive(Debug, Clone)]
pub struct Document {
    /// File path, or `-` for stdin.
    pub source: String,
    /// 1-based position of the document in its file.
    pub index: usize,
    /// Its kind, found from `apiVersion` and `kind`.
    pub kind: &'static KindInfo,
    /// The object as written, validated against its kind's schema.
    pub object: Value,
}

impl Document {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// `metadata.namespace`, if it names one.
    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }

    /// `FILE: document N (Kind name)` for messages.
    pub fn origin(&self) -> String {
        format!(
            "{}: document {} ({} {})",
            self.source,
            self.index,
            self.kind.kind,
            self.name()
        )
    }
}

/// Why a manifest was refused; each names the file (and the document where there is one).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file or directory could not be read.
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A YAML document is not valid YAML.
    #[error("{path}: document {index}: invalid YAML at line {line}, column {column}: {message}")]
    Yaml {
        path: String,
        index: usize,
        line: usize,
        column: usize,
        message: String,
    },
    /// A JSON file is not valid JSON.
    #[error("{path}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A document is not an object of a known kind, or fails its kind's schema.
    #[error("{path}: document {index}: {message}")]
    Document {
        path: String,
        index: usize,
        message: String,
    },
    /// An Oakestra SLA that cannot be imported.
    #[error("{path}: {error}")]
    Sla {
        path: String,
        error: Box<sla::SlaError>,
    },
}

/// How a file's documents are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Manifests, and SLAs where a document is one ([`sla::is_sla`]).
    Manifests,
    /// Every document is an SLA (`oakctl convert`).
    Slas,
}

/// Read every object of every path (files, directories of `.yaml`/`.yml`/`.json`, `-`);
/// SLAs among them are imported with `options`.
pub fn load(
    paths: &[PathBuf],
    options: &sla::Options,
) -> Result<Vec<Document>, Vec<ManifestError>> {
    load_as(paths, options, Reading::Manifests)
}

/// Read every document of every path as an Oakestra SLA, into the objects it maps to.
pub fn load_slas(
    paths: &[PathBuf],
    options: &sla::Options,
) -> Result<Vec<Document>, Vec<ManifestError>> {
    load_as(paths, options, Reading::Slas)
}

fn load_as(
    paths: &[PathBuf],
    options: &sla::Options,
    reading: Reading,
) -> Result<Vec<Document>, Vec<ManifestError>> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        for file in expand(path, &mut errors) {
            let (name, text) = match read(&file) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            match parse_as(&name, &text, options, reading) {
                Ok(mut d) => docs.append(&mut d),
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

fn expand(path: &Path, errors: &mut Vec<ManifestError>) -> Vec<PathBuf> {
    if path.as_os_str() == "-" || !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            files.sort();
            files
        }
        Err(source) => {
            errors.push(ManifestError::Read {
                path: path.display().to_string(),
                source,
            });
            vec![]
        }
    }
}

fn read(path: &Path) -> Result<(String, String), ManifestError> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
            ManifestError::Read {
                path: "-".into(),
                source,
            }
        })?;
        return Ok(("-".into(), text));
    }
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: name.clone(),
        source,
    })?;
    Ok((name, text))
}

/// Parse the text of one file into documents (SLAs with the default [`sla::Options`]).
#[cfg(test)]
pub fn parse(path: &str, text: &str) -> Result<Vec<Document>, Vec<ManifestError>> {
    parse_as(path, text, &sla::Options::default(), Reading::Manifests)
}

/// Parse the text of one file into documents, reading SLAs as `reading` says.
fn parse_as(
    path: &str,
    text: &str,
    options: &sla::Options,
    reading: Reading,
) -> Result<Vec<Document>, Vec<ManifestError>> {
    let values: Vec<Value> = if path.ends_with(".json") || text.trim_start().starts_with('{') {
        match serde_json::from_str::<Value>(text) {
            Ok(v) => vec![v],
            Err(e) => {
                return Err(vec![ManifestError::Json {
                    path: path.into(),
                    line: e.line(),
                    column: e.column(),
                    message: e.to_string(),
                }])
            }
        }
    } else {
        let mut values = Vec::new();
        for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
            match Value::deserialize(doc) {
                Ok(v) => values.push(v),
                Err(e) => {
                    let (line, column) = e
                        .location()
                        .map(|l| (l.line(), l.column()))
                        .unwrap_or((0, 0));
                    let message = e.to_string();
                    let message = message
                        .split(" at line ")
                        .next()
                        .unwrap_or(&message)
                        .to_string();
                    return Err(vec![ManifestError::Yaml {
                        path: path.into(),
                        index: i + 1,
                        line,
                        column,
                        message,
                    }]);
                }
            }
        }
        values
    };
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        let items = if reading == Reading::Slas || sla::is_sla(&value) {
            match sla::convert(&value, options) {
                Ok(converted) => converted.objects(),
                Err(e) => {
                    errors.extend(e.into_iter().map(|error| ManifestError::Sla {
                        path: path.into(),
                        error: Box::new(error),
                    }));
                    continue;
                }
            }
        } else {
            // A `List` (as `get -o yaml` prints) holds its objects in `items`.
            match value.get("kind").and_then(Value::as_str) {
                Some("List") => value["items"].as_array().cloned().unwrap_or_default(),
                _ => vec![value],
            }
        };
        for object in items {
            match classify(object) {
                Ok((kind, object)) => docs.push(Document {
                    source: path.into(),
                    index: i + 1,
                    kind,
                    object,
                }),
                Err(message) => errors.push(ManifestError::Document {
                    path: path.into(),
                    index: i + 1,
                    message,
                }),
            }
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

/// Find the kind of an object and validate it against the kind's schema.
fn classify(object: Value) -> Result<(&'static KindInfo, Value), String> {
    if object.get("apiVersion").is_none() && object.get("kind").is_none() {
        return Err(
            "neither a manifest (apiVersion and kind are missing) nor an Oakestra SLA \
             (sla_version and applications are missing)"
                .into(),
        );
    }
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or("apiVersion: required")?;
    let kind_name = object
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("kind: required")?;
    let kind = crds::kind_by_gvk(api_version, kind_name).ok_or_else(|| {
        let known: Vec<String> = crds::KINDS
            .iter()
            .map(|k| format!("{} {}", k.api_version(), k.kind))
            .collect();
        format!(
            "unknown kind {kind_name:?} of apiVersion {api_version:?}; known kinds: {}",
            known.join(", ")
        )
    })?;
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(format!("{kind_name}: metadata.name: required"));
    }
    kind.validate(&object)
        .map_err(|e| format!("{kind_name} {name:?} is invalid: {e}"))?;
    Ok((kind, object))
}

#[cfg(test)]
mod fuzz {
    //! The manifest reader fed arbitrary text (bolero; `e2e/tests/fuzz.rs` has the other
    //! parsers): documents or errors naming the file, never a panic.

    use super::*;

    /// A valid file the random text is spliced into, so the reader gets past the first
    /// line (random text alone rarely is YAML).
    const VALID: &str = "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  replicas: 2\n  template: {runtime: process, executable: /bin/true}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n";

    #[test]
    fn any_text_is_documents_or_errors() {
        bolero::check!()
            .with_iterations(e2e::fuzz_iterations())
            .with_type::<(String, u16)>()
            .for_each(|(text, at)| {
                let mut at = usize::from(*at) % (VALID.len() + 1);
                while !VALID.is_char_boundary(at) {
                    at -= 1;
                }
                let spliced = format!("{}{text}{}", &VALID[..at], &VALID[at..]);
                for (path, text) in [
                    ("fuzz.yaml", text.as_str()),
                    ("fuzz.json", text),
                    ("spliced.yaml", &spliced),
                ] {
                    match parse(path, text) {
                        Ok(documents) => {
                            for d in &documents {
                                assert!(d.origin().starts_with(path), "{}", d.origin());
                            }
                        }
                        Err(errors) => assert!(!errors.is_empty()),
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml() {
        let text = "apiVersion: oakestra.io/v1\nkind: Cluster\nmetadata: {name: a}\nspec: {}\n---\napiVersion: oakestra.io/v1\nkind: Cluster\nmetadata: {name: b}\nspec: {}\n---\n";
        let docs = parse("c.yaml", text).unwrap();
        assert_eq!(
            docs.iter().map(Document::name).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(docs[1].index, 2);
    }

    #[test]
    fn yaml_syntax_error_names_document_and_line() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: oakestra.io/v1\nkind: Cluster\nmetadata: [unclosed\n";
        let e = parse("bad.yaml", text).unwrap_err();
        let msg = e[0].to_string();
        assert!(
            msg.starts_with("bad.yaml: document 2: invalid YAML at line 8"),
            "{msg}"
        );
    }

    #[test]
    fn schema_error_names_field() {
        let text = "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  replicas: -2\n  template: {image: x}\n";
        let msg = parse("s.yaml", text).unwrap_err()[0].to_string();
        assert_eq!(
            msg,
            "s.yaml: document 1: Service \"web\" is invalid: spec.replicas: must be >= 0"
        );
    }

    #[test]
    fn unknown_kind_lists_known_ones() {
        let msg = parse(
            "x.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        )
        .unwrap_err()[0]
            .to_string();
        assert!(
            msg.contains("unknown kind \"Deployment\"") && msg.contains("oakestra.io/v1 Service"),
            "{msg}"
        );
    }
}
