//! `oakctl diff -f …`: for each object of the manifests (an Oakestra SLA read as the
//! objects [`sla`] maps it to), the live object against the
//! server's dry-run answer to applying it (see [`crate::ssa`]), as a unified diff of
//! YAML. Exits as kubectl's diff: 0 when nothing would change, 1 when something would,
//! more on errors (see [`Exit::for_diff`]).

use crate::commands::{Manifests, Session};
use crate::exit::{Exit, Failure};
use crate::manifest::Document;
use crate::ssa::{self, Manager};
use serde_json::Value;

/// The arguments of `oakctl diff`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    manifests: Manifests,
    #[command(flatten)]
    manager: Manager,
}

/// Diff every object, printing each difference; fail at the end if any object could
/// not be diffed (at once if the server cannot be reached or has no server-side apply).
pub async fn run(s: &Session, args: Args) -> anyhow::Result<()> {
    let docs = args.manifests.load()?;
    let mut failed = Vec::new();
    let mut differs = false;
    for doc in &docs {
        match diff_one(s, doc, &args.manager).await {
            Ok(text) => {
                differs |= !text.is_empty();
                out!("{text}");
            }
            Err(e) if e.is_transport() => {
                return Err(Failure::error(
                    Exit::of_client(&e).for_diff(),
                    e.to_string(),
                ))
            }
            Err(e) => {
                if let Some(text) = ssa::unsupported_text(&e) {
                    return Err(Failure::error(Exit::Failed.for_diff(), text));
                }
                failed.push(Exit::of_client(&e).for_diff());
                let text = ssa::conflict_text(&e).unwrap_or_else(|| e.to_string());
                eprintln!("error: {}: {text}", doc.origin());
            }
        }
    }
    if !failed.is_empty() {
        return Err(Failure::error(
            Exit::common(failed.iter().copied()),
            format!(
                "{} of {} objects could not be diffed",
                failed.len(),
                docs.len()
            ),
        ));
    }
    if differs {
        return Err(Failure::silent(Exit::Failed));
    }
    Ok(())
}

/// The diff of one object: the live one (if any) against the dry-run apply's answer.
async fn diff_one(
    s: &Session,
    doc: &Document,
    manager: &Manager,
) -> Result<String, client::ClientError> {
    let api = s.api(doc.kind, doc.namespace());
    let live = api.get_opt(doc.name()).await?;
    let merged = ssa::apply(&api.dry_run(), doc, manager).await?;
    Ok(diff_text(&label(doc, &s.namespace), live.as_ref(), &merged))
}

/// How the diff's headers name `doc`: `Service demo/web`, `Cluster munich-1`.
fn label(doc: &Document, default_ns: &str) -> String {
    if doc.kind.namespaced {
        let ns = doc.namespace().unwrap_or(default_ns);
        format!("{} {ns}/{}", doc.kind.kind, doc.name())
    } else {
        format!("{} {}", doc.kind.kind, doc.name())
    }
}

/// The unified diff (YAML, 3 lines of context) of `live` (`None`: absent) against
/// `merged`, both without what every write changes ([`ssa::comparable`]); empty when
/// they agree.
fn diff_text(label: &str, live: Option<&Value>, merged: &Value) -> String {
    let yaml =
        |v: &Value| yaml_serde::to_string(&ssa::comparable(v)).expect("JSON values are YAML");
    let old = live.map(yaml).unwrap_or_default();
    let new = yaml(merged);
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{label} (live)"), &format!("{label} (applied)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn web(rv: &str, replicas: u32, labels: Value) -> Value {
        json!({
            "apiVersion": "oakestra.io/v1", "kind": "Service",
            "metadata": {
                "name": "web", "namespace": "demo", "resourceVersion": rv, "generation": 1,
                "creationTimestamp": "2024-01-01T00:00:00Z", "labels": labels,
                "managedFields": [{"manager": "oakctl", "operation": "Apply", "time": rv}],
            },
            "spec": {"replicas": replicas, "template": {"image": "x"}},
        })
    }

    #[test]
    fn the_diff_shows_content_changes_only() {
        const L: &str = "Service demo/web";
        let live = web("5", 2, json!({"app": "web"}));
        let cases: [(&str, Option<&Value>, Value, &str); 4] = [
            (
                "nothing but versions, times and ownership differ",
                Some(&live),
                web("9", 2, json!({"app": "web"})),
                "",
            ),
            (
                "a changed field",
                Some(&live),
                web("5", 3, json!({"app": "web"})),
                "--- Service demo/web (live)\n+++ Service demo/web (applied)\n\
                 @@ -6,6 +6,6 @@\n   name: web\n   namespace: demo\n spec:\n-  replicas: 2\n+  replicas: 3\n   template:\n     image: x\n",
            ),
            (
                "an added label",
                Some(&live),
                web("5", 2, json!({"app": "web", "tier": "gold"})),
                "--- Service demo/web (live)\n+++ Service demo/web (applied)\n\
                 @@ -3,6 +3,7 @@\n metadata:\n   labels:\n     app: web\n+    tier: gold\n   name: web\n   namespace: demo\n spec:\n",
            ),
            (
                "an object to create: every line is new",
                None,
                web("1", 1, json!({})),
                "--- Service demo/web (live)\n+++ Service demo/web (applied)\n\
                 @@ -0,0 +1,10 @@\n+apiVersion: oakestra.io/v1\n+kind: Service\n+metadata:\n+  labels: {}\n\
                 +  name: web\n+  namespace: demo\n+spec:\n+  replicas: 1\n+  template:\n+    image: x\n",
            ),
        ];
        for (what, live, merged, expected) in cases {
            assert_eq!(diff_text(L, live, &merged), expected, "{what}");
        }
    }

    #[test]
    fn labels_name_kind_namespace_and_name() {
        let text = "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {name: web}\nspec: {template: {image: x}}\n---\n\
                    apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {name: api, namespace: demo}\nspec: {template: {image: x}}\n---\n\
                    apiVersion: oakestra.io/v1\nkind: Cluster\nmetadata: {name: munich-1}\nspec: {}\n";
        let docs = crate::manifest::parse("m.yaml", text).unwrap();
        let labels: Vec<String> = docs.iter().map(|d| label(d, "team")).collect();
        assert_eq!(
            labels,
            ["Service team/web", "Service demo/api", "Cluster munich-1"]
        );
    }
}
