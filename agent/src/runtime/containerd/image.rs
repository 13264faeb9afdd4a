//! Client-side pull into containerd (Debian's containerd 1.6 has no transfer service):
//! fetch the manifest, config and layers from the registry into the content store, unpack
//! the layers into committed snapshots with the diff service, and record the image, with
//! the labels containerd's garbage collector follows.

use std::collections::HashMap;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, InfoRequest, ReadContentRequest,
    UpdateImageRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor as PbDescriptor;
use futures::StreamExt;
use tonic::Code;

use super::client::{Containerd, CtrError, SNAPSHOTTER};
use super::registry::{self, Descriptor, ImageConfig, Manifest, OciRegistry, Reference};
use crate::digest::sha256_digest;

/// An image ready to start containers from.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The name in containerd's image store.
    pub name: String,
    /// What the image says a container runs (entrypoint, cmd, env, working directory).
    pub config: ImageConfig,
    /// The snapshot of the top layer (its chain id).
    pub chain_id: String,
}

fn pb(d: &Descriptor) -> PbDescriptor {
    PbDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        ..Default::default()
    }
}

/// Chain ids of a layer stack (`sha256(parent + " " + diff_id)`), as the snapshots are named.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let id = match out.last() {
            None => d.clone(),
            Some(parent) => sha256_digest(format!("{parent} {d}").as_bytes()),
        };
        out.push(id);
    }
    out
}

impl Containerd {
    /// Make `reference` runnable: use the stored image if there is one, else pull it; then
    /// unpack what is not unpacked yet.
    pub async fn ensure_image(
        &self,
        reference: &str,
        http: &reqwest::Client,
        insecure: &[String],
    ) -> Result<Unpacked, CtrError> {
        let parsed = Reference::parse(reference).map_err(CtrError::Pull)?;
        let name = parsed.name();
        let stored = self
            .images()
            .get(self.req(GetImageRequest { name: name.clone() }))
            .await;
        let target = match stored {
            Ok(r) => r.into_inner().image.and_then(|i| i.target),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(CtrError::call("images.get", s)),
        };
        let manifest_desc = match target {
            Some(t) => self.platform_manifest(&t).await?,
            None => self.pull(&parsed, http, insecure).await?,
        };
        let manifest: Manifest = self.read_json(&manifest_desc.digest, "manifest").await?;
        let config: ImageConfig = self.read_json(&manifest.config.digest, "config").await?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(CtrError::Image(format!(
                "{name}: {} layers but {} diff ids in the config",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let chain_id = self.unpack(&manifest, &config).await?;
        Ok(Unpacked {
            name,
            config,
            chain_id,
        })
    }

    /// The manifest for this platform under a stored image's target.
    async fn platform_manifest(&self, target: &PbDescriptor) -> Result<Descriptor, CtrError> {
        let desc = Descriptor {
            media_type: target.media_type.clone(),
            digest: target.digest.clone(),
            size: target.size,
            platform: None,
        };
        if desc.media_type != registry::OCI_INDEX && desc.media_type != registry::DOCKER_LIST {
            return Ok(desc);
        }
        let index: registry::Index = self.read_json(&desc.digest, "index").await?;
        registry::select(&index, &registry::platform()).ok_or_else(|| {
            CtrError::Image(format!("{}: no manifest for this platform", desc.digest))
        })
    }

    /// Fetch everything the image needs into the content store and record the image.
    /// Returns this platform's manifest.
    async fn pull(
        &self,
        reference: &Reference,
        http: &reqwest::Client,
        insecure: &[String],
    ) -> Result<Descriptor, CtrError> {
        let started = std::time::Instant::now();
        let registry = OciRegistry::new(http.clone(), reference, insecure);
        let resolved = registry.resolve().await.map_err(CtrError::Pull)?;
        let (manifest_desc, manifest_bytes) = resolved.manifest;
        let url = registry.blob_url(&manifest_desc.digest);
        let manifest: Manifest =
            registry::parse(&url, "manifest", &manifest_bytes).map_err(CtrError::Pull)?;
        let lease = self.lease().await?;
        // Layers and config first, then the manifests that point at them.
        let blobs = manifest
            .layers
            .iter()
            .chain(std::iter::once(&manifest.config));
        let mut fetches = Vec::new();
        for blob in blobs {
            fetches.push(self.fetch_blob(&registry, blob, &lease));
        }
        futures::future::try_join_all(fetches).await?;
        let mut labels: HashMap<String, String> = HashMap::new();
        labels.insert(
            "containerd.io/gc.ref.content.config".into(),
            manifest.config.digest.clone(),
        );
        for (i, l) in manifest.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        self.write_blob(&manifest_desc, manifest_bytes, labels, &lease)
            .await?;
        let target = match resolved.index {
            Some((index_desc, index_bytes)) => {
                let mut labels = HashMap::new();
                labels.insert(
                    "containerd.io/gc.ref.content.m.0".into(),
                    manifest_desc.digest.clone(),
                );
                self.write_blob(&index_desc, index_bytes, labels, &lease)
                    .await?;
                index_desc
            }
            None => manifest_desc.clone(),
        };
        let image = Image {
            name: reference.name(),
            target: Some(pb(&target)),
            ..Default::default()
        };
        let created = self
            .images()
            .create(self.leased(
                CreateImageRequest {
                    image: Some(image.clone()),
                    ..Default::default()
                },
                &lease,
            ))
            .await;
        match created {
            Err(s) if s.code() == Code::AlreadyExists => {
                self.images()
                    .update(self.req(UpdateImageRequest {
                        image: Some(image),
                        ..Default::default()
                    }))
                    .await
                    .map_err(|s| CtrError::call("images.update", s))?;
            }
            Err(s) => return Err(CtrError::call("images.create", s)),
            Ok(_) => {}
        }
        self.drop_lease(&lease).await;
        tracing::info!(image = %reference.name(), layers = manifest.layers.len(), elapsed_ms = started.elapsed().as_millis() as u64, "pulled");
        Ok(manifest_desc)
    }

    async fn has_blob(&self, digest: &str) -> Result<bool, CtrError> {
        match self
            .content()
            .info(self.req(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(CtrError::call("content.info", s)),
        }
    }

    /// Stream one blob from the registry into the content store (digest checked by
    /// containerd on commit).
    async fn fetch_blob(
        &self,
        registry: &OciRegistry,
        desc: &Descriptor,
        lease: &str,
    ) -> Result<(), CtrError> {
        if self.has_blob(&desc.digest).await? {
            return Ok(());
        }
        let response = registry.blob(&desc.digest).await.map_err(CtrError::Pull)?;
        let (reference, total, expected) = (
            format!("oakestra-{}", desc.digest),
            desc.size,
            desc.digest.clone(),
        );
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let failed_in = failed.clone();
        let mut offset = 0i64;
        let (r2, e2) = (reference.clone(), expected.clone());
        let writes = response
            .bytes_stream()
            .take_while(move |chunk| {
                let ok = chunk.is_ok();
                if let Err(e) = chunk {
                    *failed_in.lock().expect("not poisoned") = Some(e.to_string());
                }
                futures::future::ready(ok)
            })
            .map(move |chunk| {
                let data = chunk.expect("errors end the stream").to_vec();
                let req = WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: r2.clone(),
                    total,
                    expected: e2.clone(),
                    offset,
                    data,
                    ..Default::default()
                };
                offset += req.data.len() as i64;
                req
            })
            .chain(futures::stream::once(futures::future::ready(
                WriteContentRequest {
                    action: WriteAction::Commit as i32,
                    r#ref: reference.clone(),
                    total,
                    expected: expected.clone(),
                    offset: total,
                    ..Default::default()
                },
            )));
        let result = self.stream_write(writes, lease).await;
        if let Some(e) = failed.lock().expect("not poisoned").take() {
            return Err(CtrError::Pull(registry::RegistryError::Status {
                url: registry.blob_url(&desc.digest),
                status: reqwest::StatusCode::BAD_GATEWAY,
                message: format!("download interrupted: {e}"),
            }));
        }
        result
    }

    /// Write a small blob we already hold (manifests, indexes) with `labels`.
    async fn write_blob(
        &self,
        desc: &Descriptor,
        bytes: Vec<u8>,
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<(), CtrError> {
        let reference = format!("oakestra-{}", desc.digest);
        let requests = vec![
            WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total: bytes.len() as i64,
                expected: desc.digest.clone(),
                offset: 0,
                data: bytes.clone(),
                ..Default::default()
            },
            WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: reference,
                total: bytes.len() as i64,
                expected: desc.digest.clone(),
                offset: bytes.len() as i64,
                labels,
                ..Default::default()
            },
        ];
        self.stream_write(futures::stream::iter(requests), lease)
            .await
    }

    async fn stream_write<S>(&self, requests: S, lease: &str) -> Result<(), CtrError>
    where
        S: futures::Stream<Item = WriteContentRequest> + Send + 'static,
    {
        let call = self.content().write(self.leased(requests, lease)).await;
        let mut responses = match call {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(CtrError::call("content.write", s)),
        };
        loop {
            match responses.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
                Err(s) => return Err(CtrError::call("content.write", s)),
            }
        }
    }

    /// Read a JSON blob from the content store.
    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &str,
        what: &'static str,
    ) -> Result<T, CtrError> {
        let mut stream = self
            .content()
            .read(self.req(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|s| CtrError::call("content.read", s))?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(part) = stream
            .message()
            .await
            .map_err(|s| CtrError::call("content.read", s))?
        {
            bytes.extend_from_slice(&part.data);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CtrError::Image(format!("{what} {digest} is not valid: {e}")))
    }

    /// Unpack the layers not yet unpacked; returns the top chain id.
    async fn unpack(&self, manifest: &Manifest, config: &ImageConfig) -> Result<String, CtrError> {
        let chain = chain_ids(&config.rootfs.diff_ids);
        let mut parent = String::new();
        for (layer, id) in manifest.layers.iter().zip(&chain) {
            let exists = self
                .snapshots()
                .stat(self.req(StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.clone(),
                }))
                .await;
            match exists {
                Ok(_) => {}
                Err(s) if s.code() == Code::NotFound => {
                    self.apply_layer(layer, id, &parent).await?
                }
                Err(s) => return Err(CtrError::call("snapshots.stat", s)),
            }
            parent = id.clone();
        }
        Ok(parent)
    }

    async fn apply_layer(
        &self,
        layer: &Descriptor,
        chain_id: &str,
        parent: &str,
    ) -> Result<(), CtrError> {
        let key = format!("extract-{}-{chain_id}", uuid::Uuid::new_v4().simple());
        let mounts = self
            .snapshots()
            .prepare(self.req(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: parent.to_string(),
                ..Default::default()
            }))
            .await
            .map_err(|s| CtrError::call("snapshots.prepare", s))?
            .into_inner()
            .mounts;
        let applied = self
            .diff()
            .apply(self.req(ApplyRequest {
                diff: Some(pb(layer)),
                mounts,
                ..Default::default()
            }))
            .await;
        let result = match applied {
            Err(s) => Err(CtrError::call("diff.apply", s)),
            Ok(_) => match self
                .snapshots()
                .commit(self.req(CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: chain_id.to_string(),
                    key: key.clone(),
                    ..Default::default()
                }))
                .await
            {
                Ok(_) => return Ok(()),
                // Someone else unpacked the same layer meanwhile.
                Err(s) if s.code() == Code::AlreadyExists => Ok(()),
                Err(s) => Err(CtrError::call("snapshots.commit", s)),
            },
        };
        let _ = self
            .snapshots()
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key,
            }))
            .await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256_digest(b"sha256:aaaa sha256:bbbb"));
    }
}
