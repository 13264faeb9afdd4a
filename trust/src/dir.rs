//! The credentials a tier keeps under its data directory, and their bootstrap.
//!
//! ```text
//! <data>/admin.kubeconfig        an administrator's kubeconfig of this tier's API
//! <data>/join-token              the first join token for the tier below (K10…)
//! <data>/pki/ca.crt, ca.key      the tier's own certificate authority (root, cluster)
//! <data>/pki/server.crt, .key    the serving certificate of its API
//! <data>/pki/proxy.crt, .key     the identity it presents to the tier below
//! <data>/pki/tokens.json         join and admin tokens (hashes of their secrets only)
//! <data>/pki/members.json        the hashed secrets of the members that joined
//! <data>/pki/members/C.ca.crt    the CA that member cluster C brought (root only)
//! <data>/pki/upstream/           what joining the tier above gave: ca.crt (pinned),
//!                                client.crt/.key, serving.crt/.key (nodes), secret
//! ```
//!
//! Private keys and token files are written with mode 0600. Certificates are issued
//! again at a start when they are past two thirds of their lifetime or lack a name
//! the tier is now reached by.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use pki::{CertInfo, CertificateAuthority, CertifiedKey, Identity, MemberSecrets, TokenStore};

use crate::TrustError;

/// Lifetime of serving and proxy certificates.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Lifetime of the client certificates issued to members (renewed at two thirds).
pub const MEMBER_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// Lifetime of an administrator's client certificate.
pub const ADMIN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where a tier's credentials are, under its data directory.
#[derive(Debug, Clone)]
pub struct TierPaths {
    data: PathBuf,
}

impl TierPaths {
    /// The credentials of the tier whose data directory is `data`.
    pub fn new(data: impl Into<PathBuf>) -> TierPaths {
        TierPaths { data: data.into() }
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// `<data>/pki`: the CA, serving and proxy certificates, tokens, members.
    pub fn pki(&self) -> PathBuf {
        self.data.join("pki")
    }

    /// `<data>/admin.kubeconfig`.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.data.join("admin.kubeconfig")
    }

    /// `<data>/join-token`: the join token made at the first start.
    pub fn join_token(&self) -> PathBuf {
        self.data.join("join-token")
    }

    /// `<data>/pki/tokens.json`.
    pub fn tokens(&self) -> PathBuf {
        self.pki().join("tokens.json")
    }

    /// `<data>/pki/members.json`.
    pub fn members(&self) -> PathBuf {
        self.pki().join("members.json")
    }

    /// `<data>/pki/members/NAME.ca.crt`: the CA member `name` brought when it joined.
    pub fn member_ca(&self, name: &str) -> PathBuf {
        self.pki().join("members").join(format!("{name}.ca.crt"))
    }

    /// `<data>/pki/upstream`: what joining the tier above gave.
    pub fn upstream(&self) -> PathBuf {
        self.pki().join("upstream")
    }
}

/// The names a server's certificate must carry for clients that dial `listen`:
/// `localhost`, the loopback addresses, this host's name, the listen address when it
/// is a specific one, and `extra` (`--tls-san`).
pub fn server_names(listen: std::net::SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim().to_lowercase();
        if !host.is_empty() {
            names.push(host);
        }
    }
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// What a tier that admits others holds: its CA, the certificate its API serves, the
/// identity it presents to the tier below, its tokens and its members' secrets.
pub struct Authority {
    /// Where the files are.
    pub paths: TierPaths,
    /// The tier's certificate authority.
    pub ca: CertificateAuthority,
    /// The serving certificate of its API.
    pub serving: CertifiedKey,
    /// The client certificate it presents to the tier below (log proxying).
    pub proxy: CertifiedKey,
    /// Join and admin tokens.
    pub tokens: TokenStore,
    /// The hashed secrets of the members that joined.
    pub members: MemberSecrets,
}

impl Authority {
    /// Open the authority under `paths`, creating what is missing: the CA named
    /// `ca_name`, a serving certificate for `sans`, a proxy certificate for `proxy`, and
    /// at the first start a join token (written to [`TierPaths::join_token`]).
    pub fn open(
        paths: TierPaths,
        ca_name: &str,
        proxy: &Identity,
        sans: &[String],
    ) -> Result<Authority, TrustError> {
        let pki_dir = paths.pki();
        let (ca, created) = CertificateAuthority::load_or_create(&pki_dir, ca_name)?;
        if created {
            tracing::info!(dir = %pki_dir.display(), ca = ca_name, "created a certificate authority");
        }
        let serving = current_or_issue(&pki_dir, "server", Some(sans), || {
            ca.issue_server(sans, SERVING_LIFETIME)
        })?;
        let proxy = current_or_issue(&pki_dir, "proxy", None, || {
            ca.issue_client(proxy, SERVING_LIFETIME)
        })?;
        let tokens = TokenStore::open(&paths.tokens())?;
        let members = MemberSecrets::open(&paths.members())?;
        if !paths.join_token().exists() {
            let token = tokens.create(
                pki::TokenUsage::Join,
                &ca.hash(),
                None,
                "made at the first start",
            )?;
            pki::write_private(&paths.join_token(), format!("{token}\n").as_bytes())?;
        }
        Ok(Authority {
            paths,
            ca,
            serving,
            proxy,
            tokens,
            members,
        })
    }

    /// The first join token (what [`TierPaths::join_token`] holds).
    pub fn join_token(&self) -> Result<String, TrustError> {
        read(&self.paths.join_token()).map(|t| t.trim().to_string())
    }

    /// Write an administrator's kubeconfig of the API at `server` (an `https://` URL) to
    /// `path`, with a new administrator certificate; `name` names its cluster, user and
    /// context entries.
    pub fn write_admin_kubeconfig(
        &self,
        server: &str,
        name: &str,
        path: &Path,
    ) -> Result<(), TrustError> {
        let admin = self.ca.issue_client(&Identity::admin(), ADMIN_LIFETIME)?;
        let config = client::kubeconfig::Kubeconfig::single(
            name,
            server,
            self.ca.cert_pem(),
            client::kubeconfig::KubeUser::Certificate {
                cert_pem: admin.cert_pem,
                key_pem: admin.key_pem,
            },
        );
        config
            .save(path)
            .map_err(|e| TrustError::Tls(format!("writing {}: {e}", path.display())))
    }

    /// Write the admin kubeconfig of `server` to `path` unless one for that server and
    /// this CA is there already.
    pub fn ensure_admin_kubeconfig(
        &self,
        server: &str,
        name: &str,
        path: &Path,
    ) -> Result<(), TrustError> {
        let current = client::kubeconfig::Kubeconfig::load(path)
            .ok()
            .and_then(|c| c.resolve(None).ok());
        let same = current.is_some_and(|c| {
            c.server == server && c.tls.ca_pem.as_deref() == Some(self.ca.cert_pem())
        });
        if !same {
            self.write_admin_kubeconfig(server, name, path)?;
        }
        Ok(())
    }
}

/// The certificate `stem` in `dir` if it is there, not past two thirds of its lifetime
/// and (given `sans`) carries each of them; otherwise a new one from `issue`, saved.
pub fn current_or_issue(
    dir: &Path,
    stem: &str,
    sans: Option<&[String]>,
    issue: impl FnOnce() -> Result<CertifiedKey, pki::PkiError>,
) -> Result<CertifiedKey, TrustError> {
    if let Ok(current) = CertifiedKey::load(dir, stem) {
        if still_good(&current.cert_pem, sans) {
            return Ok(current);
        }
    }
    let issued = issue()?;
    issued.save(dir, stem)?;
    tracing::info!(dir = %dir.display(), certificate = stem, "issued a certificate");
    Ok(issued)
}

/// Whether `cert_pem` is before its renewal time and carries every one of `sans`.
fn still_good(cert_pem: &str, sans: Option<&[String]>) -> bool {
    let Ok(info) = CertInfo::parse(cert_pem) else {
        return false;
    };
    let fresh = Utc::now() < pki::renew_at(&info);
    let named = sans.is_none_or(|wanted| wanted.iter().all(|n| info.sans.contains(n)));
    fresh && named
}

/// What a tier got from the tier above by joining it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The upstream CA, as pinned by the join token's hash.
    pub ca_pem: String,
    /// This tier's client certificate there.
    pub client: CertifiedKey,
    /// The serving certificate it issued (nodes: for the agent's endpoint).
    pub serving: Option<CertifiedKey>,
}

impl Upstream {
    /// What is stored under `paths`, if this tier has joined before.
    pub fn load(paths: &TierPaths) -> Result<Option<Upstream>, TrustError> {
        let dir = paths.upstream();
        let ca = dir.join("ca.crt");
        if !ca.exists() {
            return Ok(None);
        }
        let serving = if dir.join("serving.crt").exists() {
            Some(CertifiedKey::load(&dir, "serving")?)
        } else {
            None
        };
        Ok(Some(Upstream {
            ca_pem: read(&ca)?,
            client: CertifiedKey::load(&dir, "client")?,
            serving,
        }))
    }

    /// Store it under `paths`.
    pub fn save(&self, paths: &TierPaths) -> Result<(), TrustError> {
        let dir = paths.upstream();
        self.client.save(&dir, "client")?;
        if let Some(serving) = &self.serving {
            serving.save(&dir, "serving")?;
        }
        pki::write_private(&dir.join("ca.crt"), self.ca_pem.as_bytes())?;
        Ok(())
    }

    /// The secret this tier proves its name with when it joins (made once, kept).
    pub fn secret(paths: &TierPaths) -> Result<String, TrustError> {
        let path = paths.upstream().join("secret");
        if let Ok(secret) = std::fs::read_to_string(&path) {
            return Ok(secret.trim().to_string());
        }
        let secret = pki::random_string(32).map_err(pki::PkiError::from)?;
        pki::write_private(&path, format!("{secret}\n").as_bytes())?;
        Ok(secret)
    }

    /// TLS settings of a client of the tier above: its CA and this tier's certificate,
    /// with the handle that swaps in a renewed one.
    pub fn tls(
        &self,
    ) -> Result<(client::tls::TlsOptions, client::tls::ClientCertificate), TrustError> {
        let identity =
            client::tls::ClientCertificate::new(&self.client.cert_pem, &self.client.key_pem)
                .map_err(|e| TrustError::Tls(e.to_string()))?;
        let options = client::tls::TlsOptions {
            ca_pem: Some(self.ca_pem.clone()),
            identity: Some(identity.clone()),
            bearer: None,
            server_name: None,
        };
        Ok((options, identity))
    }
}

fn read(path: &Path) -> Result<String, TrustError> {
    std::fs::read_to_string(path).map_err(|source| TrustError::File {
        path: path.to_path_buf(),
        source,
    })
}
