//! Just enough of the OCI distribution protocol to pull an image: parse a reference,
//! resolve it to a manifest for this platform, and stream blobs. Anonymous bearer tokens
//! (Docker Hub, most public registries) are fetched on a 401 challenge; loopback and
//! `--insecure-registry` hosts are spoken to over plain HTTP.

use serde::Deserialize;

/// Media type of an OCI image index (one manifest per platform).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of a Docker manifest list (the Docker form of an index).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of a Docker image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Why a pull failed; the message is what `oakctl describe` shows.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference (given, and why it is not one) does not parse.
    #[error("invalid image reference {0:?}: {1}")]
    Reference(String, &'static str),
    /// The request did not get an answer.
    #[error("{url}: {source}")]
    Http {
        /// What was asked for.
        url: String,
        /// Why there was no answer.
        source: reqwest::Error,
    },
    /// The registry answered with an error.
    #[error("{url}: registry answered {status}: {message}")]
    Status {
        /// What was asked for.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The registry's own words.
        message: String,
    },
    /// The image (its name, and the platform wanted) has no manifest for this platform.
    #[error("{0}: no manifest for {1}")]
    Platform(String, String),
    /// A manifest, index or token answer is not what it should be.
    #[error("{url}: malformed {what}: {source}")]
    Malformed {
        /// Where it came from.
        url: String,
        /// What it was meant to be.
        what: &'static str,
        /// Why it does not parse.
        source: serde_json::Error,
    },
}

/// A parsed image reference: `[host[:port]/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host as written (`docker.io` for the default).
    pub host: String,
    /// The repository (`library/busybox`).
    pub repository: String,
    /// The tag (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// The pinned digest (`sha256:…`), if any.
    pub digest: Option<String>,
}

impl Reference {
    /// Parse `s` as Docker does (`busybox` is `docker.io/library/busybox:latest`).
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        let bad = |why| RegistryError::Reference(s.to_string(), why);
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(bad("empty or contains whitespace"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) if d.starts_with("sha256:") && d.len() == 71 => (r, Some(d.to_string())),
            Some(_) => return Err(bad("the digest must be sha256:<64 hex digits>")),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if tag.as_deref() == Some("") || name.is_empty() {
            return Err(bad("empty name or tag"));
        }
        let (host, repository) = match name.split_once('/') {
            Some((h, r)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), r.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let repository = if host == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository
            .chars()
            .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c)))
        {
            return Err(bad(
                "the repository must be lower-case letters, digits, '.', '_', '-' and '/'",
            ));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            host,
            repository,
            tag,
            digest,
        })
    }

    /// The name the image is stored under in containerd (`docker.io/library/busybox:1`).
    pub fn name(&self) -> String {
        let mut s = format!("{}/{}", self.host, self.repository);
        if let Some(t) = &self.tag {
            s = format!("{s}:{t}");
        }
        if let Some(d) = &self.digest {
            s = format!("{s}@{d}");
        }
        s
    }

    /// What to ask the registry's manifest endpoint for.
    fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    fn api_host(&self) -> &str {
        if self.host == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.host
        }
    }
}

/// An OCI descriptor as found in manifests.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is.
    pub media_type: String,
    /// Its digest (`sha256:…`).
    pub digest: String,
    /// Its size in bytes.
    pub size: i64,
    /// The platform of a manifest in an index.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An OS and CPU architecture in OCI terms (`linux`, `amd64`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Platform {
    /// The CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// The operating system (`linux`).
    pub os: String,
}

/// An image index (or manifest list): one manifest per platform.
#[derive(Debug, Deserialize)]
pub struct Index {
    /// The manifests.
    pub manifests: Vec<Descriptor>,
}

/// An image manifest: the config blob and the layers, bottom first.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    /// The image configuration blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// The parts of an image configuration a container is started from.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    /// What a container of it runs.
    #[serde(default)]
    pub config: RunConfig,
    /// Its layers, by the digests of their uncompressed contents.
    pub rootfs: RootFs,
}

/// The run part of an image configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// `KEY=VALUE` pairs.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// What runs, before `cmd`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// The default arguments (or command, without an entrypoint).
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Where it runs.
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// The layers of an image configuration.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    /// The digests of the uncompressed layers, bottom first.
    pub diff_ids: Vec<String>,
}

/// This machine's platform in OCI terms.
pub fn platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    };
    Platform {
        architecture: architecture.into(),
        os: "linux".into(),
    }
}

/// Pick this platform's manifest out of an index.
pub fn select(index: &Index, want: &Platform) -> Option<Descriptor> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref() == Some(want))
        .cloned()
}

/// A client for one repository of one registry.
pub struct OciRegistry {
    http: reqwest::Client,
    reference: Reference,
    base: String,
    token: tokio::sync::Mutex<Option<String>>,
}

/// Hosts that are spoken to over plain HTTP without being listed.
fn is_loopback(host: &str) -> bool {
    let bare = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    bare == "localhost"
        || bare == "[::1]"
        || bare
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

impl OciRegistry {
    /// A client of `reference`'s repository through `http`; plain HTTP for loopback
    /// hosts and those in `insecure`.
    pub fn new(http: reqwest::Client, reference: &Reference, insecure: &[String]) -> OciRegistry {
        let host = reference.api_host();
        let scheme = if is_loopback(host) || insecure.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        };
        OciRegistry {
            http,
            base: format!("{scheme}://{host}/v2/{}", reference.repository),
            reference: reference.clone(),
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// GET `url` with `accept`, answering one bearer challenge.
    async fn get(&self, url: &str, accept: &str) -> Result<reqwest::Response, RegistryError> {
        let http = |source| RegistryError::Http {
            url: url.to_string(),
            source,
        };
        let send = |token: Option<String>| {
            let mut req = self.http.get(url).header(reqwest::header::ACCEPT, accept);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send()
        };
        let token = self.token.lock().await.clone();
        let mut response = send(token).await.map_err(http)?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if let Some(token) = self.fetch_token(&challenge).await? {
                *self.token.lock().await = Some(token.clone());
                response = send(Some(token)).await.map_err(http)?;
            }
        }
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(RegistryError::Status {
                url: url.to_string(),
                status,
                message: registry_message(&body),
            });
        }
        Ok(response)
    }

    /// An anonymous token for a `Bearer realm=…,service=…,scope=…` challenge.
    async fn fetch_token(&self, challenge: &str) -> Result<Option<String>, RegistryError> {
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Ok(None);
        };
        let mut realm = None;
        let mut query = Vec::new();
        for part in params.split(',') {
            let Some((k, v)) = part.trim().split_once('=') else {
                continue;
            };
            let v = v.trim_matches('"').to_string();
            match k {
                "realm" => realm = Some(v),
                "service" | "scope" => query.push((k.to_string(), v)),
                _ => {}
            }
        }
        let Some(realm) = realm else { return Ok(None) };
        if !query.iter().any(|(k, _)| k == "scope") {
            query.push((
                "scope".into(),
                format!("repository:{}:pull", self.reference.repository),
            ));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let http = |source| RegistryError::Http {
            url: realm.clone(),
            source,
        };
        let response = self
            .http
            .get(&realm)
            .query(&query)
            .send()
            .await
            .map_err(http)?;
        let body = response.bytes().await.map_err(http)?;
        let token: Token =
            serde_json::from_slice(&body).map_err(|source| RegistryError::Malformed {
                url: realm.clone(),
                what: "token response",
                source,
            })?;
        Ok(token.token.or(token.access_token))
    }

    /// Resolve the reference to this platform's manifest: its descriptor and bytes, plus
    /// the index it was chosen from (descriptor and bytes), if any.
    pub async fn resolve(&self) -> Result<Resolved, RegistryError> {
        let accept = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ");
        let (top, bytes) = self
            .manifest(self.reference.manifest_ref(), &accept)
            .await?;
        if top.media_type == OCI_INDEX || top.media_type == DOCKER_LIST {
            let url = self.url("manifests", self.reference.manifest_ref());
            let index: Index = parse(&url, "image index", &bytes)?;
            let want = platform();
            let chosen = select(&index, &want).ok_or_else(|| {
                RegistryError::Platform(
                    self.reference.name(),
                    format!("{}/{}", want.os, want.architecture),
                )
            })?;
            let (desc, manifest) = self.manifest(&chosen.digest, &chosen.media_type).await?;
            Ok(Resolved {
                manifest: (desc, manifest),
                index: Some((top, bytes)),
            })
        } else {
            Ok(Resolved {
                manifest: (top, bytes),
                index: None,
            })
        }
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/{kind}/{reference}", self.base)
    }

    async fn manifest(
        &self,
        reference: &str,
        accept: &str,
    ) -> Result<(Descriptor, Vec<u8>), RegistryError> {
        let url = self.url("manifests", reference);
        let response = self.get(&url, accept).await?;
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .unwrap_or_default();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| RegistryError::Http {
                url: url.clone(),
                source,
            })?
            .to_vec();
        let digest = crate::digest::sha256_digest(&bytes);
        // Some registries omit the media type of manifests they store without one.
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Typed {
                media_type: Option<String>,
                manifests: Option<serde_json::Value>,
            }
            let typed: Typed = parse(&url, "manifest", &bytes)?;
            typed.media_type.unwrap_or_else(|| {
                if typed.manifests.is_some() {
                    OCI_INDEX
                } else {
                    OCI_MANIFEST
                }
                .to_string()
            })
        } else {
            media_type
        };
        Ok((
            Descriptor {
                media_type,
                size: bytes.len() as i64,
                digest,
                platform: None,
            },
            bytes,
        ))
    }

    /// Stream a blob.
    pub async fn blob(&self, digest: &str) -> Result<reqwest::Response, RegistryError> {
        self.get(&self.url("blobs", digest), "*/*").await
    }

    /// The URL of blob `digest` (for messages).
    pub fn blob_url(&self, digest: &str) -> String {
        self.url("blobs", digest)
    }
}

/// A reference resolved to this platform's manifest.
pub struct Resolved {
    /// This platform's manifest: descriptor and bytes.
    pub manifest: (Descriptor, Vec<u8>),
    /// The index it was chosen from, if any: descriptor and bytes.
    pub index: Option<(Descriptor, Vec<u8>)>,
}

/// Parse `bytes` from `url` as JSON `what` (named in the error).
pub fn parse<'a, T: Deserialize<'a>>(
    url: &str,
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|source| RegistryError::Malformed {
        url: url.to_string(),
        what,
        source,
    })
}

/// The registry's own words from an error body (`{"errors":[{"code","message"}]}`).
fn registry_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| format!("{} ({})", e.message, e.code))
            .collect::<Vec<_>>()
            .join("; "),
        _ => body.trim().chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn references_are_normalised_like_docker_does() {
        assert_eq!(r("busybox").name(), "docker.io/library/busybox:latest");
        assert_eq!(r("busybox:1.36").name(), "docker.io/library/busybox:1.36");
        assert_eq!(
            r("nginxinc/nginx").name(),
            "docker.io/nginxinc/nginx:latest"
        );
        let local = r("127.0.0.1:5000/demo/web:v2");
        assert_eq!(local.host, "127.0.0.1:5000");
        assert_eq!(local.repository, "demo/web");
        assert_eq!(local.tag.as_deref(), Some("v2"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = r(&format!("localhost:5000/web@{digest}"));
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.manifest_ref(), digest);
        assert!(Reference::parse("Busybox").is_err());
        assert!(Reference::parse("busybox:").is_err());
        assert!(Reference::parse("busybox@sha256:12").is_err());
    }

    #[test]
    fn loopback_registries_use_plain_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(!is_loopback("registry.example.com"));
    }

    #[test]
    fn registry_errors_keep_the_registry_message() {
        let body =
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_message(body),
            "manifest unknown (MANIFEST_UNKNOWN)"
        );
    }

    #[test]
    fn index_selects_this_platform() {
        let index: Index = serde_json::from_str(
            r#"{"manifests":[
              {"mediaType":"m","digest":"sha256:a","size":1,"platform":{"architecture":"arm64","os":"linux"}},
              {"mediaType":"m","digest":"sha256:b","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#,
        )
        .unwrap();
        let amd = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
        };
        assert_eq!(select(&index, &amd).unwrap().digest, "sha256:b");
    }
}
