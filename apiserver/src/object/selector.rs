//! Label and field selectors, as `labelSelector` and `fieldSelector` of lists and
//! watches: parsed from their query strings, matched against objects.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A Kubernetes label selector: `app=web,tier!=db,env in (a,b),!legacy`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parse a `labelSelector` query value; the empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let words: Vec<&str> = part.splitn(2, ' ').collect();
            let req = if let Some(rest) = words.get(1).map(|r| r.trim()) {
                let key = words[0].to_string();
                let (negated, values) = if let Some(v) = rest.strip_prefix("notin") {
                    (true, v)
                } else if let Some(v) = rest.strip_prefix("in") {
                    (false, v)
                } else {
                    return Err(format!(
                        "invalid label selector {part:?}: expected 'in' or 'notin'"
                    ));
                };
                let values = values
                    .trim()
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'));
                let values: Vec<String> = values
                    .ok_or_else(|| {
                        format!("invalid label selector {part:?}: values must be in parentheses")
                    })?
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .collect();
                if negated {
                    Requirement::NotIn(key, values)
                } else {
                    Requirement::In(key, values)
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            out.push(req);
        }
        Ok(LabelSelector(out))
    }

    /// Whether the selector has no requirement (it selects every object).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.get("metadata").and_then(|m| m.get("labels"));
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v),
            Requirement::NotEquals(k, v) => get(k) != Some(v),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// Split on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A field selector: `metadata.name=web,spec.node!=n1` (any dotted path to a scalar).
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    /// Parse a `fieldSelector` query value; the empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, equal, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid field selector {part:?}: expected field=value or field!=value"
                ));
            };
            out.push((
                path.trim().split('.').map(String::from).collect(),
                equal,
                value.trim().to_string(),
            ));
        }
        Ok(FieldSelector(out))
    }

    /// Whether the selector has no requirement (it selects every object).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether one requirement is `field=value` (`field` a dotted path): the selector
    /// selects no object whose `field` is anything else.
    pub fn requires(&self, field: &str, value: &str) -> bool {
        self.0.iter().any(|(path, equal, v)| {
            *equal && v == value && path.iter().map(String::as_str).eq(field.split('.'))
        })
    }

    /// Whether every requirement holds; a missing field reads as the empty string.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let found = path
                .iter()
                .try_fold(object, |v, p| v.get(p))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                });
            (found.as_deref().unwrap_or("") == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let o = json!({"metadata": {"labels": {"app": "web", "env": "prod"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web,env=prod", true),
            ("app!=web", false),
            ("env in (dev, prod)", true),
            ("env notin (prod)", false),
            ("app", true),
            ("!app", false),
            ("!tier", true),
            ("tier in (a),app=web", false),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&o),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("env of (a)").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "a"}, "spec": {"node": "n1", "replicas": 2}});
        assert!(FieldSelector::parse("metadata.name=a").unwrap().matches(&o));
        assert!(FieldSelector::parse("spec.node!=n2,spec.replicas=2")
            .unwrap()
            .matches(&o));
        assert!(!FieldSelector::parse("spec.cluster=x").unwrap().matches(&o));
        // `kubectl wait` selects one object by name, on every kind (Namespaces,
        // cluster-scoped Nodes, namespaced Services alike).
        for (selector, object, want) in [
            (
                "metadata.name=web",
                json!({"metadata": {"name": "web"}}),
                true,
            ),
            (
                "metadata.name=web",
                json!({"metadata": {"name": "web-2"}}),
                false,
            ),
            (
                "metadata.name=web",
                json!({"metadata": {"name": "web", "namespace": "default"}}),
                true,
            ),
            (
                "metadata.name=n1,metadata.namespace=",
                json!({"metadata": {"name": "n1"}}),
                true,
            ),
        ] {
            let s = FieldSelector::parse(selector).unwrap();
            assert_eq!(s.matches(&object), want, "{selector} on {object}");
        }
    }
}
