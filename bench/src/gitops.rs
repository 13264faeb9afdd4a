//! Scenario `gitops`: what reconciling N unchanged objects costs a deployment tool. N Services
//! are applied once (server-side, manager `flux`) to an in-process API server over TLS
//! (N writes, which also shows that the count works); then two passes over the same N manifests, timed, counting the server's storage
//! writes (creates, updates and deletes from its `/metrics`):
//!
//! 1. *drift check*, as Flux's kustomize-controller does: a GET and a server-side
//!    dry-run apply per object (`force`, `dryRun=All`);
//! 2. *re-apply*, as `kubectl apply --server-side` and Argo CD do: a real server-side
//!    apply per object of the same content.
//!
//! Both must write nothing: a dry run never persists, and an apply that changes nothing
//! is not written.

use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};

use crate::api_writes::{InProcessServer, ServerStore};
use crate::prom::{sample, scrape, PREFIX};
use crate::stats::round3;

/// The figures of one pass.
pub struct Pass {
    pub name: &'static str,
    pub objects: usize,
    pub reads: usize,
    pub dry_runs: usize,
    pub applies: usize,
    /// Storage creates, updates and deletes the server made during the pass.
    pub writes: f64,
    pub seconds: f64,
}

fn service(i: usize) -> Value {
    json!({
        "apiVersion": "oakestra.io/v1", "kind": "Service",
        "metadata": {"name": format!("gitops-{i:05}"), "namespace": "default", "labels": {"app": "gitops"}},
        "spec": {"replicas": 1, "template": {"runtime": "process", "executable": "/bin/true",
                 "ports": [{"containerPort": 8080 + (i % 100) as u16}]}},
    })
}

/// Storage writes the server has made, from its `/metrics`.
fn writes(metrics: &str) -> f64 {
    let name = format!("{PREFIX}storage_duration_seconds_count");
    ["create", "update", "delete"]
        .iter()
        .map(|op| sample(metrics, &name, &format!("operation=\"{op}\"")))
        .sum()
}

/// Apply `objects` Services, then run both passes over them.
pub async fn run(objects: usize) -> anyhow::Result<Vec<Pass>> {
    let dir = tempfile::tempdir().context("temp dir for the embedded store")?;
    let server = InProcessServer::start(ServerStore::Embedded(dir.path().join("store")), true)
        .await
        .context("starting the API server")?;
    let client = server.client.clone();
    let services = client.dynamic(
        crds::kind_by_name("services").context("services are served")?,
        Some("default"),
    );
    let manifests: Vec<Value> = (0..objects).map(service).collect();
    let name = |m: &Value| {
        m["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut passes = Vec::new();
    // The first apply creates every object: N writes, which also shows the count works.
    for pass in [
        "first apply (creates)",
        "drift check (GET + dry-run apply)",
        "re-apply",
    ] {
        let before = writes(&scrape(&client).await?);
        let start = Instant::now();
        let (mut reads, mut dry_runs, mut applies) = (0, 0, 0);
        for m in &manifests {
            if pass.starts_with("first") {
                services.apply(&name(m), m, "flux", true).await?;
                applies += 1;
            } else if pass.starts_with("drift") {
                services.get(&name(m)).await?;
                services.dry_run().apply(&name(m), m, "flux", true).await?;
                reads += 1;
                dry_runs += 1;
            } else {
                services.apply(&name(m), m, "flux", true).await?;
                applies += 1;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let after = writes(&scrape(&client).await?);
        passes.push(Pass {
            name: pass,
            objects,
            reads,
            dry_runs,
            applies,
            writes: after - before,
            seconds,
        });
    }
    Ok(passes)
}

pub fn print(passes: &[Pass]) {
    println!("\ngitops: a reconcile of unchanged Services (server-side apply, manager flux, TLS)");
    println!(
        "{:<36} {:>7} {:>6} {:>8} {:>7} {:>7} {:>8} {:>9}",
        "pass", "objects", "reads", "dry-runs", "applies", "writes", "seconds", "objects/s"
    );
    for p in passes {
        println!(
            "{:<36} {:>7} {:>6} {:>8} {:>7} {:>7.0} {:>8.2} {:>9.0}",
            p.name,
            p.objects,
            p.reads,
            p.dry_runs,
            p.applies,
            p.writes,
            p.seconds,
            p.objects as f64 / p.seconds.max(1e-9)
        );
    }
}

pub fn to_json(passes: &[Pass]) -> Value {
    Value::Array(
        passes
            .iter()
            .map(|p| {
                json!({
                    "pass": p.name, "objects": p.objects, "reads": p.reads, "dry_runs": p.dry_runs,
                    "applies": p.applies, "storage_writes": p.writes, "seconds": round3(p.seconds),
                })
            })
            .collect(),
    )
}
