//! `oakestra backup` and `oakestra restore`: a root's objects into one file, as of one
//! revision, and back into a new store (`docs/operations.md`, "Backup and restore").
//! The file's format, its one writer and its checks are `apiserver::backup`'s.
//!
//! A running embedded store is held by its server (redb locks the file and has no
//! read-only open beside the lock), so `backup --store embedded:DIR` reads the store
//! itself only while no server runs on it; while one does, it takes the snapshot
//! through that server (`GET /oakestra/v1/snapshot`, administrators only), with the
//! admin kubeconfig of the root's data directory. `--kubeconfig` asks a server directly,
//! whatever its store.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use apiserver::backup::{self, Backup};
use apiserver::storage::embedded::{self, EmbeddedOptions, EmbeddedStore};
use apiserver::storage::etcd::EtcdStore;
use apiserver::storage::StorageError;
use apiserver::StoreConfig;
use clap::Args;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::roles::data_dir;

/// The flags of `oakestra backup`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["store", "kubeconfig"])))]
pub struct BackupArgs {
    /// The store to back up: `embedded:DIR` (read directly when no server runs on it,
    /// else through the server that does) or `etcd:URL[,URL…]` (read directly).
    #[arg(long)]
    store: Option<StoreConfig>,
    /// The data directory of the root on `--store` (default: the embedded store's
    /// directory): its admin kubeconfig reaches the server that holds the store.
    #[arg(long, requires = "store")]
    data_dir: Option<PathBuf>,
    /// Take the backup through the server this kubeconfig reaches, as its user (an
    /// administrator), whatever the server's store.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The server's URL instead of the kubeconfig's (its CA and user kept).
    #[arg(long)]
    server: Option<String>,
    /// The file to write; it is replaced only once the whole backup is in and reads back.
    file: PathBuf,
}

/// The flags of `oakestra restore`.
#[derive(Args)]
pub struct RestoreArgs {
    /// The store to restore into: `embedded:DIR`, new or holding no object, with no
    /// server running on it (etcd: `etcdctl snapshot restore`, docs/operations.md).
    #[arg(long)]
    store: StoreConfig,
    /// The backup, as `oakestra backup` wrote it.
    file: PathBuf,
}

/// A backup's lines as they come, from a store or a server.
type Lines = BoxStream<'static, anyhow::Result<axum::body::Bytes>>;

/// The key prefix of the server's objects in etcd (`apiserver::Server::start`'s).
const ETCD_ROOT: &str = "/oakestra";

/// `oakestra backup`: write the snapshot to the file, check it reads back, and say what
/// it holds.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let (lines, from) = source(&args).await?;
    let backup = write(&args.file, lines).await?;
    println!(
        "backed up {} objects at revision {} of the {} store ({from}) to {}: {}",
        backup.objects.len(),
        backup.header.revision,
        backup.header.store,
        args.file.display(),
        backup.summary()
    );
    Ok(())
}

/// Where the snapshot comes from, and how to say so.
async fn source(args: &BackupArgs) -> anyhow::Result<(Lines, String)> {
    if let Some(kubeconfig) = &args.kubeconfig {
        return through_server(kubeconfig, args.server.as_deref()).await;
    }
    let store = args.store.as_ref().context("--store or --kubeconfig")?;
    match store {
        StoreConfig::Embedded(dir) => {
            let file = dir.join(embedded::FILE);
            anyhow::ensure!(
                file.exists(),
                "embedded:{}: no store there (no {})",
                dir.display(),
                embedded::FILE
            );
            match EmbeddedStore::open(dir, EmbeddedOptions::default()) {
                Ok(opened) => Ok((
                    direct(Arc::new(opened)),
                    format!("read from {}", file.display()),
                )),
                Err(e) if embedded::is_held(&e) => {
                    let data = data_dir(args.data_dir.as_deref(), store, "/var/lib/oakestra/root");
                    let kubeconfig = trust::TierPaths::new(&data).admin_kubeconfig();
                    anyhow::ensure!(
                        kubeconfig.exists(),
                        "{} is held by a running server, and {} is not there to reach it: give the root's --data-dir, or --kubeconfig of an administrator of that server",
                        file.display(),
                        kubeconfig.display()
                    );
                    eprintln!(
                        "{} is held by a running server: taking the snapshot through it ({})",
                        file.display(),
                        kubeconfig.display()
                    );
                    through_server(&kubeconfig, args.server.as_deref()).await
                }
                Err(e) => Err(e.into()),
            }
        }
        StoreConfig::Etcd(endpoints) => {
            let opened = EtcdStore::connect(endpoints, ETCD_ROOT).await?;
            Ok((
                direct(Arc::new(opened)),
                format!("read from etcd at {}", endpoints.join(",")),
            ))
        }
    }
}

/// The snapshot of a store this process opened.
fn direct(store: Arc<dyn apiserver::storage::Storage>) -> Lines {
    backup::snapshot(store)
        .map(|chunk| chunk.map_err(anyhow::Error::from))
        .boxed()
}

/// The snapshot the server that `kubeconfig` reaches (at `server`, if given) streams.
async fn through_server(
    kubeconfig: &Path,
    server: Option<&str>,
) -> anyhow::Result<(Lines, String)> {
    let config = client::kubeconfig::Kubeconfig::load(kubeconfig)?;
    let client = config.resolve(None)?.client(server)?;
    let url = client.base().trim_end_matches('/').to_string();
    let lines = client
        .get_stream(backup::SNAPSHOT_PATH)
        .await
        .with_context(|| format!("taking the snapshot through the server at {url}"))?;
    Ok((
        lines
            .map(|chunk| chunk.map_err(anyhow::Error::from))
            .boxed(),
        format!("through the server at {url}"),
    ))
}

/// Write `lines` to `file`: into `FILE.partial` beside it, synced and read back whole
/// (a snapshot that broke off lacks its end line), then renamed over `file`. On any
/// failure the partial file is removed and `file` is left as it was.
async fn write(file: &Path, mut lines: Lines) -> anyhow::Result<Backup> {
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = async {
        let mut out = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        while let Some(chunk) = lines.next().await {
            let chunk = chunk.context("the snapshot broke off")?;
            out.write_all(&chunk)
                .with_context(|| format!("writing {}", partial.display()))?;
        }
        out.sync_all()
            .with_context(|| format!("writing {}", partial.display()))?;
        let backup = backup::read(&partial).context("the snapshot does not read back")?;
        std::fs::rename(&partial, file)
            .with_context(|| format!("renaming {} to {}", partial.display(), file.display()))?;
        Ok(backup)
    }
    .await;
    // Close the store (a direct read) before this process goes on or ends.
    drop(lines);
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// `oakestra restore`: check the whole file, then write every object into a new
/// embedded store in one transaction, and say what it restored.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let dir = match &args.store {
        StoreConfig::Embedded(dir) => dir,
        StoreConfig::Etcd(_) => anyhow::bail!(
            "oakestra restore writes embedded stores; to restore etcd, restore an etcdctl snapshot into a new data directory (etcdctl snapshot restore FILE --data-dir NEW, docs/operations.md \"Backup and restore\")"
        ),
    };
    let backup = backup::read(&args.file)?;
    let file = dir.join(embedded::FILE);
    let revision = backup::restore_embedded(dir, &backup).map_err(|e| match e {
        StorageError::AlreadyExists { key } => anyhow::anyhow!(
            "embedded:{} already holds objects ({key}, …): restore writes only into a new store or one without objects; nothing was written (move {} away to restore there)",
            dir.display(),
            file.display()
        ),
        e if embedded::is_held(&e) => anyhow::anyhow!(
            "{} is held by a running server: stop it first; nothing was written",
            file.display()
        ),
        e => anyhow::Error::from(e).context(format!("restoring into {}", file.display())),
    })?;
    println!(
        "restored {} objects into embedded:{} (now at revision {revision}) from {}, taken at revision {} of the {} store at {}: {}",
        backup.objects.len(),
        dir.display(),
        args.file.display(),
        backup.header.revision,
        backup.header.store,
        backup.header.taken_at,
        backup.summary()
    );
    Ok(())
}
