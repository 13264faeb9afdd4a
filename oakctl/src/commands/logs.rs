//! `oakctl logs NAME`: follow an Instance to its cluster's API and its node's agent, and
//! print the workload's output from there.

use client::Client;
use serde_json::Value;

use crate::commands::{kind, Session};

/// The arguments of `oakctl logs`.
#[derive(clap::Args)]
pub struct Args {
    /// Instance name.
    name: String,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
}

/// Find the Instance's node and agent, and print what the agent has kept of its output.
pub async fn run(s: &Session, args: Args) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let instance = s.api(kind("instances")?, None).get(name).await?;
    let ns = instance["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let phase = instance
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let Some(cluster) = instance["spec"]["cluster"].as_str() else {
        anyhow::bail!("instance {name} is not placed on a cluster yet (phase {phase})");
    };
    let Some(node) = instance["spec"]["node"].as_str() else {
        anyhow::bail!(
            "instance {name} is not bound to a node of cluster {cluster} yet (phase {phase})"
        );
    };
    // At the root, the cluster says where its API is; talking to a cluster API, the
    // nodes are right here.
    let cluster_api = match s
        .client
        .dynamic(kind("clusters")?, None)
        .get_opt(cluster)
        .await?
    {
        Some(c) => match c.pointer("/status/apiEndpoint").and_then(Value::as_str) {
            Some(url) if url != s.client.base() => Client::new(url)?,
            _ => s.client.clone(),
        },
        None => s.client.clone(),
    };
    let node_object = cluster_api.dynamic(kind("nodes")?, None).get(node).await?;
    let Some(agent) = node_object
        .pointer("/status/agentEndpoint")
        .and_then(Value::as_str)
    else {
        anyhow::bail!("node {node} has not reported an agent endpoint");
    };
    let query = args.tail.map(|n| format!("?tail={n}")).unwrap_or_default();
    let text = Client::new(agent)?
        .get_text(&format!("/logs/{ns}/{name}{query}"))
        .await?;
    out!("{text}");
    Ok(())
}
