//! `oakestra`: the server binary. Thin: parses flags and wires crates per role.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use apiserver::{Server, ServerConfig, StoreConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "oakestra", version, about = "Hierarchical edge orchestrator")]
struct Cli {
    #[command(subcommand)]
    role: Role,
    /// Log filter (tracing env-filter syntax), e.g. `info,apiserver=debug`.
    #[arg(long, global = true, env = "OAKESTRA_LOG", default_value = "info")]
    log: String,
}

#[derive(Subcommand)]
enum Role {
    /// Run the root orchestrator: the root API server (controllers come with later releases).
    Root {
        /// Address to serve the API on.
        #[arg(long, default_value = "127.0.0.1:10000")]
        listen: SocketAddr,
        /// `embedded:DIR` or `etcd:http://HOST:PORT[,…]`.
        #[arg(long, default_value = "embedded:/var/lib/oakestra/root")]
        store: StoreConfig,
        /// Largest accepted request body, in bytes.
        #[arg(long, default_value_t = 3 * 1024 * 1024)]
        max_body_bytes: usize,
    },
    /// Run everything on this one device with an embedded store (1-DOC).
    Up {
        /// Address to serve the API on.
        #[arg(long, default_value = "127.0.0.1:10000")]
        listen: SocketAddr,
        /// Where the embedded store keeps its data.
        #[arg(long, env = "OAKESTRA_DATA", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/oakestra"))
        .unwrap_or_else(|| PathBuf::from(".oakestra"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.role {
        Role::Root {
            listen,
            store,
            max_body_bytes,
        } => {
            let config = ServerConfig {
                max_body_bytes,
                ..ServerConfig::default()
            };
            let server = Server::start(listen, store.clone(), config)
                .await
                .with_context(|| {
                    format!("starting the root API server on {listen} with store {store:?}")
                })?;
            println!("oakestra root: API at http://{}", server.addr);
            wait(server).await
        }
        Role::Up { listen, data_dir } => {
            let store = StoreConfig::Embedded(data_dir.join("root"));
            let server = Server::start(listen, store, ServerConfig::default())
                .await
                .with_context(|| {
                    format!(
                        "starting oakestra up on {listen} with data in {}",
                        data_dir.display()
                    )
                })?;
            println!("oakestra up");
            println!("  API:   http://{}", server.addr);
            println!("  data:  {}", data_dir.display());
            println!(
                "  try:   oakctl --server http://{} apply -f manifests/",
                server.addr
            );
            println!(
                "         kubectl --server http://{} get services",
                server.addr
            );
            wait(server).await
        }
    }
}

async fn wait(server: Server) -> anyhow::Result<()> {
    tokio::select! {
        _ = server.wait() => anyhow::bail!("the API server stopped"),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted, shutting down");
            Ok(())
        }
    }
}
