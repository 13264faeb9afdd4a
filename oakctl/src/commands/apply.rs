//! `oakctl apply -f …`: one server-side apply per object of the manifests (see
//! [`crate::ssa`]; an Oakestra SLA among them is applied as the Namespaces and Services
//! [`sla`] maps it to), as a dry run with `--dry-run=server`; then, with `--prune -l
//! SELECTOR`, delete what this field manager applied before that matches the selector
//! and is no longer in the manifests. Invalid manifests are refused before anything is
//! written; a server without server-side apply is an error, never a silent fallback.

use std::collections::{BTreeSet, HashSet};

use client::{DynamicApi, ListParams};
use crds::KindInfo;
use serde_json::Value;

use crate::commands::{Manifests, Session};
use crate::exit::{Exit, Failure};
use crate::manifest::Document;
use crate::ssa::{self, Manager, Outcome};

/// `--dry-run`'s values, as kubectl's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DryRun {
    /// Write for real.
    None,
    /// The server checks and answers each apply as it would store it, and stores nothing.
    Server,
    /// Not supported: only the server can merge as the server does.
    Client,
}

/// The arguments of `oakctl apply`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    manifests: Manifests,
    #[command(flatten)]
    manager: Manager,
    /// `server`: check and show what would be applied and pruned, store nothing.
    #[arg(long, value_enum, value_name = "MODE", default_value = "none")]
    dry_run: DryRun,
    /// Accepted for kubectl's habits: every apply of oakctl is server-side.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    server_side: Option<bool>,
    /// After applying, delete the objects of the manifests' kinds (in the namespaces
    /// they touch) that match `-l`, were applied before by this field manager, and are
    /// no longer in the manifests.
    #[arg(long, requires = "selector")]
    prune: bool,
    /// The label selector of `--prune`, e.g. `app=web` (every object of the manifests
    /// is applied, whether it matches or not).
    #[arg(short = 'l', long, requires = "prune")]
    selector: Option<String>,
}

/// One object: its kind, namespace (`None`: cluster-scoped) and name.
type Key = (&'static str, Option<String>, String);

/// One listing of `--prune`: a kind in a namespace (`None`: cluster-scoped).
type Scope = (&'static KindInfo, Option<String>);

/// Apply every object, reporting each; then prune. Fail at the end if any object could
/// not be applied (at once if the server cannot be reached or has no server-side apply).
pub async fn run(s: &Session, args: Args) -> anyhow::Result<()> {
    if args.dry_run == DryRun::Client {
        return Err(Failure::usage(
            "--dry-run=client is not supported: only the server merges as the server does; \
             use --dry-run=server (checked and answered by the server, nothing stored) or oakctl diff",
        ));
    }
    if args.server_side == Some(false) {
        return Err(Failure::usage(
            "oakctl apply is always server-side: --server-side=false is not supported",
        ));
    }
    let dry_run = args.dry_run == DryRun::Server;
    let suffix = if dry_run { " (dry run)" } else { "" };
    let mut docs = args.manifests.load()?;
    let managed = ssa::with_managed_fields(&docs);
    if !managed.is_empty() {
        return Err(Failure::usage(format!(
            "{}\nnothing was applied",
            managed.join("\n")
        )));
    }
    // Namespaces first, so the objects in them can be created in the same run.
    docs.sort_by_key(|d| d.kind.kind != "Namespace");
    let mut failed = Vec::new();
    for doc in &docs {
        let api = api(s, doc, dry_run);
        match apply_one(&api, doc, &args.manager, dry_run).await {
            Ok(outcome) => outln!("{}/{} {outcome}{suffix}", doc.kind.singular, doc.name()),
            Err(e) if e.is_transport() => {
                return Err(Failure::error(
                    Exit::of_client(&e),
                    format!("{e}\nnothing more was applied"),
                ))
            }
            Err(e) => {
                if let Some(text) = ssa::unsupported_text(&e) {
                    return Err(Failure::error(Exit::Failed, text));
                }
                failed.push(Exit::of_client(&e));
                let text = ssa::conflict_text(&e).unwrap_or_else(|| e.to_string());
                eprintln!("error: {}: {text}", doc.origin());
            }
        }
    }
    if !failed.is_empty() {
        let pruned = if args.prune {
            "; nothing was pruned"
        } else {
            ""
        };
        return Err(Failure::error(
            Exit::common(failed.iter().copied()),
            format!(
                "{} of {} objects could not be applied{pruned}",
                failed.len(),
                docs.len()
            ),
        ));
    }
    if let Some(selector) = args.selector.filter(|_| args.prune) {
        prune(s, &docs, &selector, &args.manager.field_manager, suffix).await?;
    }
    Ok(())
}

/// The API of `doc`'s kind and namespace, sending dry runs if asked.
fn api(s: &Session, doc: &Document, dry_run: bool) -> DynamicApi {
    let api = s.api(doc.kind, doc.namespace());
    if dry_run {
        api.dry_run()
    } else {
        api
    }
}

/// Read the object, apply it, and tell what changed.
async fn apply_one(
    api: &DynamicApi,
    doc: &Document,
    manager: &Manager,
    dry_run: bool,
) -> Result<Outcome, client::ClientError> {
    let live = api.get_opt(doc.name()).await?;
    let answer = ssa::apply(api, doc, manager).await?;
    Ok(Outcome::of(live.as_ref(), &answer, dry_run))
}

/// Delete (or with a dry run only name) what [`to_prune`] picks in each of the
/// [`prune_scopes`] of `docs`; Namespaces last.
async fn prune(
    s: &Session,
    docs: &[Document],
    selector: &str,
    manager: &str,
    suffix: &str,
) -> anyhow::Result<()> {
    let applied: HashSet<Key> = docs.iter().map(|d| key(d, &s.namespace)).collect();
    let mut scopes = prune_scopes(docs, &s.namespace);
    scopes.sort_by_key(|(kind, _)| kind.kind == "Namespace");
    let params = ListParams {
        label_selector: Some(selector.to_string()),
        ..Default::default()
    };
    let mut failed = Vec::new();
    for (kind, ns) in &scopes {
        let api = s.client.dynamic(kind, ns.as_deref());
        let (listed, _) = api.list_all(&params).await?;
        for name in to_prune(&applied, kind, ns.as_deref(), &listed, manager) {
            if suffix.is_empty() {
                if let Err(e) = api.delete(&name, None).await {
                    failed.push(Exit::of_client(&e));
                    eprintln!("error: pruning {}/{name}: {e}", kind.singular);
                    continue;
                }
            }
            outln!("{}/{name} pruned{suffix}", kind.singular);
        }
    }
    if !failed.is_empty() {
        return Err(Failure::error(
            Exit::common(failed.iter().copied()),
            format!("{} objects could not be pruned", failed.len()),
        ));
    }
    Ok(())
}

/// The kind, namespace (the session's `default_ns` if it names none) and name of `doc`.
fn key(doc: &Document, default_ns: &str) -> Key {
    let ns = doc
        .kind
        .namespaced
        .then(|| doc.namespace().unwrap_or(default_ns).to_string());
    (doc.kind.kind, ns, doc.name().to_string())
}

/// Where `--prune` looks: each kind of `docs` (in their order) in each namespace the
/// namespaced objects of `docs` are in, or cluster-wide for cluster-scoped kinds.
fn prune_scopes(docs: &[Document], default_ns: &str) -> Vec<Scope> {
    let namespaces: BTreeSet<String> = docs.iter().filter_map(|d| key(d, default_ns).1).collect();
    let mut kinds: Vec<&'static KindInfo> = Vec::new();
    for doc in docs {
        if !kinds.iter().any(|k| k.kind == doc.kind.kind) {
            kinds.push(doc.kind);
        }
    }
    kinds
        .into_iter()
        .flat_map(|kind| -> Vec<Scope> {
            if kind.namespaced {
                namespaces
                    .iter()
                    .map(|ns| (kind, Some(ns.clone())))
                    .collect()
            } else {
                vec![(kind, None)]
            }
        })
        .collect()
}

/// The names of the `listed` objects of `kind` in `ns` to prune: not `applied`, applied
/// before by `manager` (an `Apply` entry of theirs in `managedFields`: what others
/// created is never pruned), and not already being deleted.
fn to_prune(
    applied: &HashSet<Key>,
    kind: &KindInfo,
    ns: Option<&str>,
    listed: &[Value],
    manager: &str,
) -> Vec<String> {
    listed
        .iter()
        .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
        .filter(|o| {
            o["metadata"]["managedFields"]
                .as_array()
                .is_some_and(|entries| {
                    entries
                        .iter()
                        .any(|e| e["manager"] == manager && e["operation"] == "Apply")
                })
        })
        .filter_map(|o| o["metadata"]["name"].as_str())
        .filter(|name| !applied.contains(&(kind.kind, ns.map(String::from), name.to_string())))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;
    use serde_json::json;

    fn docs(text: &str) -> Vec<Document> {
        parse("m.yaml", text).unwrap()
    }

    const SVC: &str = "apiVersion: oakestra.io/v1\nkind: Service\nspec: {template: {image: x}}\n";
    const CLUSTER: &str = "apiVersion: oakestra.io/v1\nkind: Cluster\nspec: {}\n";

    fn svc(name: &str, ns: Option<&str>) -> String {
        let ns = ns.map(|n| format!(", namespace: {n}")).unwrap_or_default();
        format!("{SVC}metadata: {{name: {name}{ns}}}\n---\n")
    }

    fn cluster(name: &str) -> String {
        format!("{CLUSTER}metadata: {{name: {name}}}\n---\n")
    }

    #[test]
    fn prune_looks_at_the_files_kinds_in_the_namespaces_they_touch() {
        /// What, the manifests, and the scopes as (kind, namespace).
        type Case = (
            &'static str,
            String,
            Vec<(&'static str, Option<&'static str>)>,
        );
        let cases: [Case; 4] = [
            (
                "the session's namespace for objects without one",
                svc("a", None),
                vec![("Service", Some("team"))],
            ),
            (
                "each namespace once, sorted",
                svc("a", Some("b")) + &svc("c", Some("a")) + &svc("d", Some("b")),
                vec![("Service", Some("a")), ("Service", Some("b"))],
            ),
            (
                "cluster-scoped kinds cluster-wide, in the files' order",
                cluster("x") + &svc("a", Some("demo")) + &cluster("y"),
                vec![("Cluster", None), ("Service", Some("demo"))],
            ),
            (
                "only cluster-scoped kinds: no namespace is touched",
                cluster("x"),
                vec![("Cluster", None)],
            ),
        ];
        for (what, text, expected) in cases {
            let scopes = prune_scopes(&docs(&text), "team");
            let scopes: Vec<(&str, Option<&str>)> = scopes
                .iter()
                .map(|(k, ns)| (k.kind, ns.as_deref()))
                .collect();
            assert_eq!(scopes, expected, "{what}");
        }
    }

    fn live(name: &str, managers: &[(&str, &str)], deleting: bool) -> Value {
        let entries: Vec<Value> = managers
            .iter()
            .map(|(m, op)| json!({"manager": m, "operation": op}))
            .collect();
        let mut o = json!({"metadata": {"name": name, "managedFields": entries}});
        if deleting {
            o["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        o
    }

    #[test]
    fn prune_takes_only_what_this_manager_applied_and_the_files_dropped() {
        let applied: HashSet<Key> = docs(&(svc("web", Some("demo")) + &cluster("c1")))
            .iter()
            .map(|d| key(d, "default"))
            .collect();
        let service = crds::kind_by_name("services").unwrap();
        let clusters = crds::kind_by_name("clusters").unwrap();
        let oakctl = [("oakctl", "Apply")];
        /// What, the kind and namespace listed, the objects listed, the names pruned.
        type Case = (
            &'static str,
            &'static KindInfo,
            Option<&'static str>,
            Vec<Value>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "a dropped object goes, the applied one stays",
                service,
                Some("demo"),
                vec![live("web", &oakctl, false), live("old", &oakctl, false)],
                vec!["old"],
            ),
            (
                "the same name in another namespace was not applied",
                service,
                Some("other"),
                vec![live("web", &oakctl, false)],
                vec!["web"],
            ),
            (
                "what others applied or created stays",
                service,
                Some("demo"),
                vec![
                    live("ci", &[("ci", "Apply")], false),
                    live("made", &[("oakctl", "Update")], false),
                    live("bare", &[], false),
                    json!({"metadata": {"name": "nofields"}}),
                    live(
                        "shared",
                        &[("kubectl", "Update"), ("oakctl", "Apply")],
                        false,
                    ),
                ],
                vec!["shared"],
            ),
            (
                "what is being deleted already is left alone",
                service,
                Some("demo"),
                vec![live("going", &oakctl, true)],
                vec![],
            ),
            (
                "cluster-scoped",
                clusters,
                None,
                vec![live("c1", &oakctl, false), live("c2", &oakctl, false)],
                vec!["c2"],
            ),
        ];
        for (what, kind, ns, listed, expected) in cases {
            assert_eq!(
                to_prune(&applied, kind, ns, &listed, "oakctl"),
                expected,
                "{what}"
            );
        }
    }
}
