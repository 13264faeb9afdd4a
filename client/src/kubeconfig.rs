//! Kubeconfig files, as kubectl reads them: which server, which CA, which user
//! (client certificate or token), which namespace, by named context.
//!
//! This module owns the file's format ([`Kubeconfig`]), where it is looked for
//! ([`locate`], [`Kubeconfig::discover`]: kubectl's order), turning a context into the
//! settings of a [`Client`] ([`Kubeconfig::resolve`], [`Kubeconfig::client`]), and
//! writing one ([`Kubeconfig::single`], [`Kubeconfig::save`]: mode 0600, atomically).
//! Paths inside a file are relative to the file's directory. Errors name the file and
//! the field.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::tls::{ClientCertificate, TlsError, TlsOptions};
use crate::{Client, ClientError};

/// A kubeconfig file: clusters, users and the contexts that pair them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// `v1`.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    /// `Config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The API servers, by name.
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    /// The credentials, by name.
    #[serde(default)]
    pub users: Vec<NamedUser>,
    /// Cluster + user (+ namespace), by name.
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// The file this was read from (relative paths inside are relative to its
    /// directory); `None` for a config built in memory.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// An entry of `clusters[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedCluster {
    /// What contexts call it.
    pub name: String,
    /// Where it is and how to trust it.
    #[serde(default)]
    pub cluster: Cluster,
}

/// An API server and the CA its certificate is checked against.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// Its URL, e.g. `https://127.0.0.1:10000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Base64 of the CA's PEM (wins over `certificate-authority`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// Path of the CA's PEM file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// The name the server's certificate must carry, if not the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

/// An entry of `users[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedUser {
    /// What contexts call it.
    pub name: String,
    /// Its credential.
    #[serde(default)]
    pub user: User,
}

/// A credential: a client certificate and key, or a bearer token (the `-data` fields
/// win over the path fields, `token` over `tokenFile`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    /// Base64 of the client certificate chain's PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// Base64 of the client key's PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    /// Path of the client certificate chain's PEM file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Path of the client key's PEM file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// A bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Path of a file holding a bearer token.
    #[serde(rename = "tokenFile", default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

/// An entry of `contexts[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedContext {
    /// What `--context` and `current-context` call it.
    pub name: String,
    /// Its cluster, user and namespace.
    #[serde(default)]
    pub context: Context,
}

/// A cluster and a user of the same file, and the default namespace there.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Context {
    /// The name of an entry of `clusters[]`.
    #[serde(default)]
    pub cluster: String,
    /// The name of an entry of `users[]` (empty: no credential).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The namespace of commands that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The credential of a [`Kubeconfig::single`].
#[derive(Debug, Clone)]
pub enum KubeUser {
    /// A client certificate (chain, leaf first) and its PKCS#8 key, both PEM.
    Certificate {
        /// The chain's PEM.
        cert_pem: String,
        /// The key's PEM.
        key_pem: String,
    },
    /// A bearer token.
    Token(String),
}

/// What a context comes to: the server, how to speak TLS to it, the namespace.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The context's name.
    pub context: String,
    /// The cluster's server URL.
    pub server: String,
    /// CA, client certificate, token and TLS server name.
    pub tls: TlsOptions,
    /// The context's namespace, if it has one.
    pub namespace: Option<String>,
}

/// Why a kubeconfig cannot be read, used or written. Each names the file, and where
/// the fault is in it the field; the message includes the cause (which is therefore
/// not also given as its `source`).
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The file cannot be read (it may not exist).
    #[error("cannot read kubeconfig {}: {cause}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
    /// The file is not YAML of a kubeconfig.
    #[error("{}: not a kubeconfig: {message}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the YAML reader said (with line and column).
        message: String,
    },
    /// No context was named and the file has no `current-context`.
    #[error("{}: no context chosen: current-context is not set and none was named", .path.display())]
    NoCurrentContext {
        /// The file.
        path: PathBuf,
    },
    /// The context named is not in `contexts[]`.
    #[error("{}: no context {name:?} in contexts[]", .path.display())]
    NoSuchContext {
        /// The file.
        path: PathBuf,
        /// The context asked for.
        name: String,
    },
    /// A context names a cluster that is not in `clusters[]`.
    #[error("{}: context {context:?} names cluster {cluster:?}, which is not in clusters[]", .path.display())]
    NoSuchCluster {
        /// The file.
        path: PathBuf,
        /// The context.
        context: String,
        /// The cluster it names.
        cluster: String,
    },
    /// A context names a user that is not in `users[]`.
    #[error("{}: context {context:?} names user {user:?}, which is not in users[]", .path.display())]
    NoSuchUser {
        /// The file.
        path: PathBuf,
        /// The context.
        context: String,
        /// The user it names.
        user: String,
    },
    /// A field's value cannot be used.
    #[error("{}: {field} {problem}", .path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// Where, e.g. `clusters[0].cluster.certificate-authority-data`.
        field: String,
        /// What is wrong, e.g. "is not base64: …".
        problem: String,
    },
    /// A file a field names cannot be read.
    #[error("{}: {field}: cannot read {}: {cause}", .path.display(), .file.display())]
    FieldFile {
        /// The kubeconfig.
        path: PathBuf,
        /// The field, e.g. `users[0].user.client-key`.
        field: String,
        /// The file it names (resolved against the kubeconfig's directory).
        file: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
    /// The CA or credential of a context is unusable (bad PEM, key not matching).
    #[error("{}: {field}: {cause}", .path.display())]
    Tls {
        /// The file.
        path: PathBuf,
        /// The entry, e.g. `users[0].user`.
        field: String,
        /// What is wrong.
        cause: TlsError,
    },
    /// The client could not be built from the settings (e.g. not a URL).
    #[error("{}: {cause}", .path.display())]
    Client {
        /// The file.
        path: PathBuf,
        /// What the client said.
        cause: ClientError,
    },
    /// The file cannot be written.
    #[error("cannot write kubeconfig {}: {cause}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
}

/// Which kubeconfig file to use, in kubectl's order: `explicit` (a path given on the
/// command line: returned as is, [`Kubeconfig::load`] then says if it is missing); else
/// the first existing file of `kubeconfig_env` (`$KUBECONFIG`, a colon-separated list);
/// else `<home>/.kube/config` if it exists; else none. `exists` is the check for a
/// file (`Path::exists` outside tests).
pub fn locate(
    explicit: Option<&Path>,
    kubeconfig_env: Option<&OsStr>,
    home: Option<&Path>,
    exists: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    if let Some(list) = kubeconfig_env {
        if let Some(path) = std::env::split_paths(list)
            .filter(|p| !p.as_os_str().is_empty())
            .find(|p| exists(p))
        {
            return Some(path);
        }
    }
    home.map(|h| h.join(".kube/config")).filter(|p| exists(p))
}

/// Base64 (standard alphabet, as kubectl writes it) of `text`.
fn encode(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

impl Kubeconfig {
    /// Read the kubeconfig at `path`.
    pub fn load(path: &Path) -> Result<Kubeconfig, KubeconfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| KubeconfigError::Read {
            path: path.into(),
            cause,
        })?;
        Kubeconfig::parse(path, &text)
    }

    /// The kubeconfig in `text`, read from `path` (which messages name, and relative
    /// paths in it are relative to).
    pub fn parse(path: &Path, text: &str) -> Result<Kubeconfig, KubeconfigError> {
        let mut config: Kubeconfig =
            yaml_serde::from_str(text).map_err(|e| KubeconfigError::Parse {
                path: path.into(),
                message: e.to_string(),
            })?;
        config.path = Some(path.into());
        Ok(config)
    }

    /// The kubeconfig kubectl would use: see [`locate`], with `$KUBECONFIG` and `$HOME`
    /// of this process. `None` when there is none.
    pub fn discover(
        explicit: Option<&Path>,
    ) -> Result<Option<(Kubeconfig, PathBuf)>, KubeconfigError> {
        let env = std::env::var_os("KUBECONFIG");
        let home = std::env::var_os("HOME").map(PathBuf::from);
        match locate(explicit, env.as_deref(), home.as_deref(), Path::exists) {
            Some(path) => Ok(Some((Kubeconfig::load(&path)?, path))),
            None => Ok(None),
        }
    }

    /// A kubeconfig of one cluster, user and context, all called `name` (the current
    /// context): `server`, trusting `ca_pem`, as `user`.
    pub fn single(name: &str, server: &str, ca_pem: &str, user: KubeUser) -> Kubeconfig {
        let user = match user {
            KubeUser::Certificate { cert_pem, key_pem } => User {
                client_certificate_data: Some(encode(&cert_pem)),
                client_key_data: Some(encode(&key_pem)),
                ..User::default()
            },
            KubeUser::Token(token) => User {
                token: Some(token),
                ..User::default()
            },
        };
        Kubeconfig {
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            clusters: vec![NamedCluster {
                name: name.into(),
                cluster: Cluster {
                    server: Some(server.into()),
                    certificate_authority_data: Some(encode(ca_pem)),
                    ..Cluster::default()
                },
            }],
            users: vec![NamedUser {
                name: name.into(),
                user,
            }],
            contexts: vec![NamedContext {
                name: name.into(),
                context: Context {
                    cluster: name.into(),
                    user: name.into(),
                    namespace: None,
                },
            }],
            current_context: Some(name.into()),
            path: None,
        }
    }

    /// Write the file at `path` (its directory created if needed), readable by its
    /// owner only (mode 0600): written beside it, then renamed over it, so a reader
    /// never sees half a file.
    pub fn save(&self, path: &Path) -> Result<(), KubeconfigError> {
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let failed = |cause| KubeconfigError::Write {
            path: path.into(),
            cause,
        };
        let text = yaml_serde::to_string(self)
            .map_err(|e| failed(std::io::Error::other(e.to_string())))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(failed)?;
        let name = path.file_name().unwrap_or(OsStr::new("kubeconfig"));
        let temp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            // A stale temporary file keeps its old mode: set it in any case.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(failed)
    }

    /// The file's path, as errors name it.
    fn origin(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from("(kubeconfig in memory)"))
    }

    /// `file` (a path field's value) resolved against the file's directory.
    fn relative(&self, file: &str) -> PathBuf {
        let dir = self
            .path
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new(""));
        dir.join(file)
    }

    /// The text of a field: its `-data` form (base64) if set, else the file its path form
    /// names, else `None`. `prefix` is where the fields are, e.g. `users[0].user`.
    fn text(
        &self,
        prefix: &str,
        (data_field, data): (&str, &Option<String>),
        (file_field, file): (&str, &Option<String>),
    ) -> Result<Option<String>, KubeconfigError> {
        if let Some(data) = data {
            let field = format!("{prefix}.{data_field}");
            let compact: String = data.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| KubeconfigError::Field {
                    path: self.origin(),
                    field: field.clone(),
                    problem: format!("is not base64: {e}"),
                })?;
            return String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| KubeconfigError::Field {
                    path: self.origin(),
                    field,
                    problem: "is not the base64 of a PEM text (not UTF-8)".into(),
                });
        }
        let Some(file) = file else { return Ok(None) };
        let resolved = self.relative(file);
        std::fs::read_to_string(&resolved)
            .map(Some)
            .map_err(|cause| KubeconfigError::FieldFile {
                path: self.origin(),
                field: format!("{prefix}.{file_field}"),
                file: resolved,
                cause,
            })
    }

    /// The server, TLS settings and namespace of `context` (else of `current-context`).
    pub fn resolve(&self, context: Option<&str>) -> Result<Resolved, KubeconfigError> {
        let path = self.origin();
        let name = context
            .or(self.current_context.as_deref())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| KubeconfigError::NoCurrentContext { path: path.clone() })?;
        let ctx = &self
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| KubeconfigError::NoSuchContext {
                path: path.clone(),
                name: name.into(),
            })?
            .context;
        let (i, cluster) = self
            .clusters
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == ctx.cluster)
            .ok_or_else(|| KubeconfigError::NoSuchCluster {
                path: path.clone(),
                context: name.into(),
                cluster: ctx.cluster.clone(),
            })?;
        let prefix = format!("clusters[{i}].cluster");
        let cluster = &cluster.cluster;
        let server = cluster
            .server
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| KubeconfigError::Field {
                path: path.clone(),
                field: format!("{prefix}.server"),
                problem: "is not set".into(),
            })?;
        let ca_pem = self.text(
            &prefix,
            (
                "certificate-authority-data",
                &cluster.certificate_authority_data,
            ),
            ("certificate-authority", &cluster.certificate_authority),
        )?;
        let mut tls = TlsOptions {
            ca_pem,
            identity: None,
            bearer: None,
            server_name: cluster.tls_server_name.clone(),
        };
        if !ctx.user.is_empty() {
            let (j, user) = self
                .users
                .iter()
                .enumerate()
                .find(|(_, u)| u.name == ctx.user)
                .ok_or_else(|| KubeconfigError::NoSuchUser {
                    path: path.clone(),
                    context: name.into(),
                    user: ctx.user.clone(),
                })?;
            self.credential(&format!("users[{j}].user"), &user.user, &mut tls)?;
        }
        Ok(Resolved {
            context: name.into(),
            server,
            tls,
            namespace: ctx.namespace.clone().filter(|n| !n.is_empty()),
        })
    }

    /// Put the credential of `user` (at `prefix`) into `tls`.
    fn credential(
        &self,
        prefix: &str,
        user: &User,
        tls: &mut TlsOptions,
    ) -> Result<(), KubeconfigError> {
        let cert = self.text(
            prefix,
            ("client-certificate-data", &user.client_certificate_data),
            ("client-certificate", &user.client_certificate),
        )?;
        let key = self.text(
            prefix,
            ("client-key-data", &user.client_key_data),
            ("client-key", &user.client_key),
        )?;
        let half = |has: &str, lacks: &str| KubeconfigError::Field {
            path: self.origin(),
            field: prefix.into(),
            problem: format!("has a {has} but no {lacks}"),
        };
        tls.identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(ClientCertificate::new(&cert, &key).map_err(
                |cause| KubeconfigError::Tls {
                    path: self.origin(),
                    field: prefix.into(),
                    cause: cause.into(),
                },
            )?),
            (Some(_), None) => return Err(half("client certificate", "client key")),
            (None, Some(_)) => return Err(half("client key", "client certificate")),
            (None, None) => None,
        };
        tls.bearer = match (&user.token, &user.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(file)) => {
                let resolved = self.relative(file);
                let token = std::fs::read_to_string(&resolved).map_err(|cause| {
                    KubeconfigError::FieldFile {
                        path: self.origin(),
                        field: format!("{prefix}.tokenFile"),
                        file: resolved,
                        cause,
                    }
                })?;
                Some(token.trim().to_string())
            }
            (None, None) => None,
        };
        Ok(())
    }

    /// A client of `context` (else `current-context`), and the context's namespace.
    pub fn client(
        &self,
        context: Option<&str>,
    ) -> Result<(Client, Option<String>), KubeconfigError> {
        let resolved = self.resolve(context)?;
        let client = resolved
            .client(None)
            .map_err(|cause| KubeconfigError::Client {
                path: self.origin(),
                cause,
            })?;
        Ok((client, resolved.namespace))
    }
}

impl Resolved {
    /// A client with these settings, of `server` if given (e.g. `--server`: another
    /// address of the same API server, the CA and user kept) else of the context's.
    pub fn client(&self, server: Option<&str>) -> crate::Result<Client> {
        Client::with_tls(server.unwrap_or(&self.server), self.tls.clone())
    }
}

#[cfg(test)]
mod tests;
