//! How objects look in a table (`kubectl get`, `oakctl get`, the API's `Table` answer):
//! the text of a cell and an object's age. Shared by the API server and the CLI so
//! both print the same.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The text of a table cell: the value at `pointer` in `object`. A pointer ending in
/// `/conditions/<Type>` yields that condition's status; `/list/*/field` yields each
/// item's field, joined by commas.
pub fn column_value(object: &Value, pointer: &str) -> String {
    if let Some((list, field)) = pointer.split_once("/*") {
        let items = object.pointer(list).and_then(Value::as_array);
        let cells: Vec<String> = items
            .into_iter()
            .flatten()
            .map(|item| column_value(item, field))
            .collect();
        return if cells.is_empty() {
            "<none>".into()
        } else {
            cells.join(",")
        };
    }
    let value = match pointer.rsplit_once("/conditions/") {
        Some((base, type_)) => object
            .pointer(&format!("{base}/conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .map(|c| c["status"].clone()),
        None => object.pointer(pointer).cloned(),
    };
    match value {
        None | Some(Value::Null) => "<none>".into(),
        Some(Value::String(s)) => s,
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        // A map (a ConfigMap's or Secret's data) shows how many keys it has, never
        // its values.
        Some(Value::Object(map)) => map.len().to_string(),
        Some(other) => other.to_string(),
    }
}

/// Age of an object like kubectl prints it (`42s`, `7m`, `3h`, `12d`).
pub fn age(object: &Value, now: DateTime<Utc>) -> String {
    let created = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    let Some(created) = created else {
        return "<unknown>".into();
    };
    let secs = (now - created.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells() {
        let o = json!({
            "spec": {"replicas": 3, "name": "web", "list": ["a", 1], "items": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        let cases = [
            ("/spec/replicas", "3"),
            ("/spec/name", "web"),
            ("/spec/list", "a,1"),
            ("/status/conditions/Ready", "True"),
            ("/status/conditions/Scheduled", "<none>"),
            ("/spec/absent", "<none>"),
            ("/spec/items/*/ip", "10.0.0.1,10.0.0.2"),
            ("/spec/absent/*/ip", "<none>"),
        ];
        for (pointer, want) in cases {
            assert_eq!(column_value(&o, pointer), want, "{pointer}");
        }
    }

    #[test]
    fn ages_like_kubectl() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cases = [
            ("2026-12-01T12:00:00Z", "0s"),
            ("2026-12-01T11:58:01Z", "119s"),
            ("2026-12-01T11:58:00Z", "2m"),
            ("2026-12-01T10:00:01Z", "119m"),
            ("2026-12-01T10:00:00Z", "2h"),
            ("2026-11-29T12:00:00Z", "2d"),
            ("2026-12-01T12:05:00Z", "0s"),
        ];
        for (created, want) in cases {
            let o = json!({"metadata": {"creationTimestamp": created}});
            assert_eq!(age(&o, now), want, "{created}");
        }
        assert_eq!(age(&json!({}), now), "<unknown>");
    }
}
