//! Server-side apply as `oakctl apply` and `oakctl diff` send it: one PATCH of
//! `application/apply-patch+yaml` per object under a field manager ([`apply`]), what
//! its answer means to the user ([`Outcome`]), the object without the fields that change
//! on every write ([`comparable`]), and the words for the refusals that need more than
//! the server's message: a field another manager owns ([`conflict_text`]) and a server
//! that does not apply at all ([`unsupported_text`]). oakctl never falls back to a
//! client-side apply.

use client::{ClientError, DynamicApi};
use serde_json::Value;

use crate::manifest::Document;

/// The media type of a server-side apply.
pub const CONTENT_TYPE: &str = "application/apply-patch+yaml";

/// The reason of a status cause that names a field another manager owns.
const CONFLICT_REASON: &str = "FieldManagerConflict";

/// The field manager flags of `apply` and `diff`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    /// The field manager the applied fields are recorded under.
    #[arg(long, value_name = "NAME", default_value = "oakctl")]
    pub field_manager: String,
    /// Take over the fields other managers own instead of failing on the conflict.
    #[arg(long)]
    pub force_conflicts: bool,
}

/// Send the object of `doc` as a server-side apply through `api` (a dry run if `api`
/// is one); the answer is the object as stored (or as it would be).
pub async fn apply(
    api: &DynamicApi,
    doc: &Document,
    manager: &Manager,
) -> Result<Value, ClientError> {
    api.apply(
        doc.name(),
        &doc.object,
        &manager.field_manager,
        manager.force_conflicts,
    )
    .await
}

/// What an apply did to one object, as `apply` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist.
    Created,
    /// It changed.
    Configured,
    /// Nothing changed.
    Unchanged,
}

impl Outcome {
    /// The outcome of an apply whose answer is `answer`, `live` the object read before
    /// (`None`: absent). A real apply changed nothing when the resourceVersion stayed; a
    /// dry run's answer is compared without the fields every write changes.
    pub fn of(live: Option<&Value>, answer: &Value, dry_run: bool) -> Outcome {
        let Some(live) = live else {
            return Outcome::Created;
        };
        let same = if dry_run {
            comparable(live) == comparable(answer)
        } else {
            live["metadata"]["resourceVersion"] == answer["metadata"]["resourceVersion"]
        };
        if same {
            Outcome::Unchanged
        } else {
            Outcome::Configured
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

/// `object` without what changes on every write and says nothing about its content:
/// `metadata.managedFields`, `resourceVersion`, `generation` and the timestamps.
pub fn comparable(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "managedFields",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
        ] {
            meta.remove(field);
        }
    }
    object
}

/// The message for an apply refused because other managers own fields it changes:
/// the server's message, each conflicting field with its cause, and the way out.
/// `None` if `error` is not such a conflict.
pub fn conflict_text(error: &ClientError) -> Option<String> {
    let ClientError::Api { status } = error else {
        return None;
    };
    let causes: Vec<String> = status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .filter(|c| c.reason == CONFLICT_REASON)
        .map(|c| format!("  {}: {}", c.field, c.message))
        .collect();
    if status.code != 409 || causes.is_empty() {
        return None;
    }
    Some(format!(
        "{}\n{}\n(--force-conflicts takes these fields over from their managers; or change \
         the manifest to agree with them, or leave the fields out)",
        status.message,
        causes.join("\n")
    ))
}

/// The message for an apply the server does not understand (415: it has no server-side
/// apply); `None` for any other error.
pub fn unsupported_text(error: &ClientError) -> Option<String> {
    if error.code() != Some(415) {
        return None;
    }
    Some(format!(
        "the API server does not support server-side apply (it refused {CONTENT_TYPE}: {error}); \
         oakctl applies only server-side and does not fall back to create/replace: \
         update the API server"
    ))
}

/// The documents that carry `metadata.managedFields` (the server keeps them; an apply
/// must not send them), as messages naming each.
pub fn with_managed_fields(docs: &[Document]) -> Vec<String> {
    docs.iter()
        .filter(|d| !d.object["metadata"]["managedFields"].is_null())
        .map(|d| {
            format!(
                "{}: metadata.managedFields must not be set (the server records them): remove it",
                d.origin()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{Status, StatusCause, StatusDetails};
    use serde_json::json;

    fn object(rv: &str, replicas: u32, managed: &str) -> Value {
        json!({
            "apiVersion": "oakestra.io/v1", "kind": "Service",
            "metadata": {
                "name": "web", "namespace": "demo", "uid": "u1", "resourceVersion": rv,
                "generation": 2, "creationTimestamp": "2024-01-01T00:00:00Z",
                "managedFields": [{"manager": managed, "operation": "Apply"}],
            },
            "spec": {"replicas": replicas},
        })
    }

    #[test]
    fn outcomes_follow_the_version_or_for_dry_runs_the_content() {
        use Outcome::*;
        let live = object("5", 2, "oakctl");
        let cases = [
            ("absent", None, object("6", 2, "oakctl"), false, Created),
            (
                "absent, dry run",
                None,
                object("", 2, "oakctl"),
                true,
                Created,
            ),
            (
                "same version",
                Some(&live),
                object("5", 2, "oakctl"),
                false,
                Unchanged,
            ),
            (
                "new version",
                Some(&live),
                object("6", 3, "oakctl"),
                false,
                Configured,
            ),
            // A real write that only moved ownership still wrote.
            (
                "ownership only",
                Some(&live),
                object("6", 2, "ci"),
                false,
                Configured,
            ),
            (
                "dry run, same content",
                Some(&live),
                object("9", 2, "ci"),
                true,
                Unchanged,
            ),
            (
                "dry run, new content",
                Some(&live),
                object("5", 3, "oakctl"),
                true,
                Configured,
            ),
        ];
        for (what, live, answer, dry_run, expected) in cases {
            assert_eq!(Outcome::of(live, &answer, dry_run), expected, "{what}");
        }
    }

    #[test]
    fn comparable_drops_only_what_every_write_changes() {
        let stripped = comparable(&object("5", 2, "oakctl"));
        assert_eq!(
            stripped,
            json!({
                "apiVersion": "oakestra.io/v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "demo", "uid": "u1"},
                "spec": {"replicas": 2},
            })
        );
        assert_eq!(comparable(&json!({"kind": "X"})), json!({"kind": "X"}));
    }

    fn api_error(code: u16, reason: &str, causes: &[(&str, &str, &str)]) -> ClientError {
        let mut status = Status::failure(code, reason, "Apply failed with 2 conflicts");
        status.details = Some(StatusDetails {
            causes: causes
                .iter()
                .map(|(reason, field, message)| StatusCause {
                    reason: reason.to_string(),
                    field: field.to_string(),
                    message: message.to_string(),
                })
                .collect(),
            ..Default::default()
        });
        ClientError::Api {
            status: Box::new(status),
        }
    }

    #[test]
    fn conflicts_name_each_field_and_the_way_out() {
        let a = r#"conflict with "a" using oakestra.io/v1"#;
        let conflict = api_error(
            409,
            "Conflict",
            &[
                (CONFLICT_REASON, ".spec.replicas", a),
                (CONFLICT_REASON, ".metadata.labels.tier", a),
            ],
        );
        assert_eq!(
            conflict_text(&conflict).unwrap(),
            format!(
                "Apply failed with 2 conflicts\n  .spec.replicas: {a}\n  .metadata.labels.tier: {a}\n\
                 (--force-conflicts takes these fields over from their managers; or change \
                 the manifest to agree with them, or leave the fields out)"
            )
        );
        let others = [
            api_error(409, "Conflict", &[]),
            api_error(
                422,
                "Invalid",
                &[("FieldValueInvalid", "spec.replicas", "bad")],
            ),
            api_error(409, "AlreadyExists", &[("FieldValueInvalid", "x", "y")]),
        ];
        for e in others {
            assert_eq!(conflict_text(&e), None, "{e:?}");
        }
    }

    #[test]
    fn only_a_415_means_no_server_side_apply() {
        let e = api_error(415, "UnsupportedMediaType", &[]);
        let text = unsupported_text(&e).unwrap();
        assert!(
            text.starts_with("the API server does not support server-side apply")
                && text.contains("does not fall back"),
            "{text}"
        );
        for code in [400, 404, 409, 422, 500] {
            assert_eq!(unsupported_text(&api_error(code, "X", &[])), None, "{code}");
        }
    }

    #[test]
    fn managed_fields_in_a_manifest_are_named() {
        let text = "apiVersion: oakestra.io/v1\nkind: Cluster\nmetadata: {name: a}\nspec: {}\n---\n\
                    apiVersion: oakestra.io/v1\nkind: Cluster\nmetadata: {name: b, managedFields: [{manager: x}]}\nspec: {}\n";
        let docs = crate::manifest::parse("c.yaml", text).unwrap();
        assert_eq!(
            with_managed_fields(&docs),
            ["c.yaml: document 2 (Cluster b): metadata.managedFields must not be set (the server records them): remove it"]
        );
        assert!(with_managed_fields(&docs[..1]).is_empty());
    }
}
