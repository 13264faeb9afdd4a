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
}

/// The path of the log of Instance `name` in `namespace`, the last `tail` lines only
/// if given.
fn log_path(namespace: &str, name: &str, tail: Option<usize>) -> String {
    let query = tail.map(|n| format!("?tailLines={n}")).unwrap_or_default();
    format!(
        "/apis/{}/namespaces/{namespace}/instances/{name}/log{query}",
        crds::API_VERSION
    )
}

/// Print the log as the server sends it (an Instance that is not running yet, or does
/// not exist, is the server's error).
pub async fn run(s: &Session, args: Args) -> anyhow::Result<()> {
    let path = log_path(&s.namespace, &args.name, args.tail);
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
                ("default", "web-0", None),
                "/apis/oakestra.io/v1/namespaces/default/instances/web-0/log",
            ),
            (
                ("team", "web-1", Some(5)),
                "/apis/oakestra.io/v1/namespaces/team/instances/web-1/log?tailLines=5",
            ),
        ];
        for ((ns, name, tail), expected) in cases {
            assert_eq!(log_path(ns, name, tail), expected);
        }
    }
}
