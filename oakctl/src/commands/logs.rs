//! `oakctl logs NAME`: print an Instance's workload output, streamed by the API server
//! oakctl talks to (`GET …/namespaces/{ns}/instances/{name}/log`, which the servers
//! forward down the tiers to the agent of the Instance's node).

use futures::StreamExt as _;

use crate::commands::Session;

/// The arguments of `oakctl logs`.
#[derive(clap::Args)]
pub struct Args {
    /// Instance name.
    name: String,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Go on printing what the workload writes, until interrupted (as `kubectl logs -f`).
    #[arg(short, long)]
    follow: bool,
}

/// The path of the log of Instance `name` in `namespace`, the last `tail` lines only
/// if given, followed with `follow`.
fn log_path(namespace: &str, name: &str, tail: Option<usize>, follow: bool) -> String {
    let mut pairs = Vec::new();
    if let Some(n) = tail {
        pairs.push(format!("tailLines={n}"));
    }
    if follow {
        pairs.push("follow=true".to_string());
    }
    let query = if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    };
    format!(
        "/apis/{}/namespaces/{namespace}/instances/{name}/log{query}",
        crds::API_VERSION
    )
}

/// Print the log as the server sends it (an Instance that is not running yet, or does
/// not exist, is the server's error).
pub async fn run(s: &Session, args: Args) -> anyhow::Result<()> {
    let path = log_path(&s.namespace, &args.name, args.tail, args.follow);
    let mut log = s.client.get_stream(&path).await?;
    while let Some(chunk) = log.next().await {
        crate::emit(&chunk?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_route_and_its_query() {
        let cases = [
            (
                ("default", "web-0", None, false),
                "/apis/oakestra.io/v1/namespaces/default/instances/web-0/log",
            ),
            (
                ("team", "web-1", Some(5), false),
                "/apis/oakestra.io/v1/namespaces/team/instances/web-1/log?tailLines=5",
            ),
            (
                ("team", "web-1", Some(5), true),
                "/apis/oakestra.io/v1/namespaces/team/instances/web-1/log?tailLines=5&follow=true",
            ),
            (
                ("default", "web-0", None, true),
                "/apis/oakestra.io/v1/namespaces/default/instances/web-0/log?follow=true",
            ),
        ];
        for ((ns, name, tail, follow), expected) in cases {
            assert_eq!(log_path(ns, name, tail, follow), expected);
        }
    }
}
