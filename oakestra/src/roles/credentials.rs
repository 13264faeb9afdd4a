//! Credentials of a tier, managed where it runs (they read and write its data
//! directory): `oakestra token create|list|delete`, `oakestra admin-kubeconfig` and
//! `oakestra member forget`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use pki::{TokenStore, TokenUsage};
use trust::TierPaths;

use crate::roles::parse_duration;

/// The data directory of the tier whose credentials a command manages.
#[derive(Args)]
pub struct TierDir {
    /// The tier's data directory (`oakestra root|cluster --data-dir`, or its embedded
    /// store's directory; `oakestra up` keeps the root's in `DATA/root`).
    #[arg(long)]
    data_dir: PathBuf,
}

impl TierDir {
    fn paths(&self) -> anyhow::Result<TierPaths> {
        let paths = TierPaths::new(&self.data_dir);
        anyhow::ensure!(
            paths.pki().join("ca.crt").exists(),
            "{} holds no certificate authority: is it the data directory of a root or cluster that has started once?",
            self.data_dir.display()
        );
        Ok(paths)
    }
}

/// `oakestra token …`: the tokens members join with and administrators authenticate with.
#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token and print it (the only time its secret is shown).
    Create {
        #[command(flatten)]
        dir: TierDir,
        /// How long it is valid, e.g. `24h`, `30m`, `7d` (default: until deleted).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// An admin token (a bearer token with every right) instead of a join token.
        #[arg(long)]
        admin: bool,
        /// What it is for, shown by `list`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the tokens (never their secrets).
    List {
        #[command(flatten)]
        dir: TierDir,
    },
    /// Delete a token by its id (the part before the dot).
    Delete {
        #[command(flatten)]
        dir: TierDir,
        /// The token's id.
        id: String,
    },
}

/// Run `oakestra token …`.
pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::Create {
            dir,
            ttl,
            admin,
            description,
        } => {
            let paths = dir.paths()?;
            let ca = pki::CertificateAuthority::load(&paths.pki())?;
            let usage = if admin {
                TokenUsage::Admin
            } else {
                TokenUsage::Join
            };
            let token =
                TokenStore::open(&paths.tokens())?.create(usage, &ca.hash(), ttl, &description)?;
            if admin {
                // A bearer token is the `ID.SECRET` part (kubeconfig `token:`).
                println!("{}", token.bearer());
            } else {
                println!("{token}");
            }
        }
        TokenCommand::List { dir } => {
            let tokens = TokenStore::open(&dir.paths()?.tokens())?.list()?;
            println!("{:<8} {:<6} {:<26} DESCRIPTION", "ID", "USAGE", "EXPIRES");
            for t in tokens {
                let expires = t
                    .expires
                    .map(|e| e.to_rfc3339())
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<8} {:<6} {:<26} {}",
                    t.id, t.usage, expires, t.description
                );
            }
        }
        TokenCommand::Delete { dir, id } => {
            let deleted = TokenStore::open(&dir.paths()?.tokens())?.delete(&id)?;
            anyhow::ensure!(deleted, "no token with id {id:?} (see oakestra token list)");
            println!("token {id} deleted");
        }
    }
    Ok(())
}

/// `oakestra admin-kubeconfig`: a new administrator's kubeconfig, e.g. when the first
/// one is lost.
#[derive(Args)]
pub struct AdminKubeconfigArgs {
    #[command(flatten)]
    dir: TierDir,
    /// The API's URL, as the administrator dials it.
    #[arg(long)]
    server: String,
    /// Where to write it (mode 0600).
    #[arg(long, short)]
    output: PathBuf,
}

/// Run `oakestra admin-kubeconfig`.
pub fn admin_kubeconfig(args: AdminKubeconfigArgs) -> anyhow::Result<()> {
    let paths = args.dir.paths()?;
    let authority = pki::CertificateAuthority::load(&paths.pki())?;
    let admin = authority.issue_client(&pki::Identity::admin(), trust::dir::ADMIN_LIFETIME)?;
    client::kubeconfig::Kubeconfig::single(
        "oakestra",
        &args.server,
        authority.cert_pem(),
        client::kubeconfig::KubeUser::Certificate {
            cert_pem: admin.cert_pem,
            key_pem: admin.key_pem,
        },
    )
    .save(&args.output)
    .with_context(|| format!("writing {}", args.output.display()))?;
    println!("wrote {}", args.output.display());
    Ok(())
}

/// `oakestra member forget NAME`: let a new member take the name of one that joined
/// before (its secret is forgotten; its certificates stay valid until they expire).
#[derive(Args)]
pub struct MemberArgs {
    #[command(subcommand)]
    command: MemberCommand,
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Forget the secret a member joined with.
    Forget {
        #[command(flatten)]
        dir: TierDir,
        /// The member's name (a cluster at the root, a node at a cluster).
        name: String,
    },
}

/// Run `oakestra member …`.
pub fn member(args: MemberArgs) -> anyhow::Result<()> {
    match args.command {
        MemberCommand::Forget { dir, name } => {
            let forgotten = pki::MemberSecrets::open(&dir.paths()?.members())?.forget(&name)?;
            anyhow::ensure!(forgotten, "no member {name:?} has joined");
            println!("member {name} forgotten: a new one may join under its name");
        }
    }
    Ok(())
}
