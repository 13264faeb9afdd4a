//! The `ConfigMap`s and Secrets this cluster's Instances take environment values from,
//! copied from the root into the cluster's API, where their nodes' agents read them
//! when a workload starts (a node reaches only its cluster).
//!
//! Each local Instance is reconciled: every `ConfigMap` and Secret its template names is
//! read at the root (the root lets a cluster read only those its own Instances use)
//! and written into the cluster's API when the copy differs, or removed when the root
//! has none. An object read in the last [`FRESH`] is not read again for another
//! Instance; one the root lacks is looked for again every [`MISSING_RETRY`]. A sweep
//! every [`SWEEP`] re-reads every object in use and removes the copies no local
//! Instance uses any more, so a Secret does not stay on a cluster that no longer needs
//! it. Copies carry the label [`COPIED`]; the cluster writes no other `ConfigMap`s or
//! Secrets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::runtime::{Action, Controller, Store};
use client::{Api, Client, ListParams};
use crds::{ConfigMap, ConfigSource, Instance, ObjectMeta, Resource, Secret};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// The label of the copies this cluster keeps (value `root`).
pub const COPIED: &str = "oakestra.io/copied-from";

/// How long a copy counts as current: another Instance that uses it within this time
/// does not read it at the root again.
pub const FRESH: Duration = Duration::from_secs(10);

/// How often an object an Instance uses but the root does not have is looked for
/// again (the Instance's agent retries its start meanwhile).
pub const MISSING_RETRY: Duration = Duration::from_secs(2);

/// How often every copy is read again at the root, and copies no Instance uses are
/// removed.
pub const SWEEP: Duration = Duration::from_secs(30);

/// One object to copy: kind, namespace, name.
type Key = (ConfigSource, String, String);

struct Ctx {
    local: Client,
    root: Client,
    instances: Store<Instance>,
    /// When each object was last read at the root, and whether it was there.
    copied: Mutex<HashMap<Key, (Instant, bool)>>,
}

/// Keep the copies of what the local Instances use until `shutdown`.
pub(super) async fn run(
    local: Client,
    root: Client,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let controller = Controller::new(local.api::<Instance>(None), ListParams::default())
        .name("config-copies")
        .concurrency(concurrency);
    let ctx = Arc::new(Ctx {
        local,
        root,
        instances: controller.store(),
        copied: Mutex::new(HashMap::new()),
    });
    let sweeper = ctx.clone();
    let stop = shutdown.clone();
    tokio::join!(
        controller.run(
            {
                let ctx = ctx.clone();
                move |i| reconcile(i, ctx.clone())
            },
            shutdown.cancelled_owned(),
        ),
        async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(SWEEP) => {}
                }
                if let Err(e) = sweep(&sweeper).await {
                    tracing::warn!(error = %e, "config copies: sweep failed; next in {SWEEP:?}");
                }
            }
        }
    );
}

/// The objects `instance` takes environment values from.
fn used_by(instance: &Instance) -> Vec<Key> {
    let ns = instance.metadata.namespace.clone().unwrap_or_default();
    instance
        .spec
        .template
        .config_sources()
        .into_iter()
        .map(|(kind, name)| (kind, ns.clone(), name.to_string()))
        .collect()
}

async fn reconcile(instance: Arc<Instance>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let mut missing = false;
    for key in used_by(&instance) {
        let known = ctx.copied.lock().expect("not poisoned").get(&key).copied();
        let exists = match known {
            Some((at, true)) if at.elapsed() < FRESH => true,
            Some((at, false)) if at.elapsed() < MISSING_RETRY => false,
            _ => copy(&ctx, &key).await?,
        };
        missing |= !exists;
    }
    // What the root does not have yet is looked for again: a user may create it after
    // the Service.
    Ok(match missing {
        true => Action::requeue(MISSING_RETRY),
        false => Action::await_change(),
    })
}

/// Read `key` at the root and make the local copy the same (or remove it); whether
/// the root has it.
async fn copy(ctx: &Ctx, key: &Key) -> Result<bool, Error> {
    let (kind, ns, name) = key;
    let exists = match kind {
        ConfigSource::ConfigMap => copy_one::<ConfigMap>(ctx, ns, name).await?,
        ConfigSource::Secret => copy_one::<Secret>(ctx, ns, name).await?,
    };
    ctx.copied
        .lock()
        .expect("not poisoned")
        .insert(key.clone(), (Instant::now(), exists));
    Ok(exists)
}

/// A kind the cluster copies: what a copy must have the same as the root's object.
trait Copied: Resource {
    /// The same content (data, type, the `immutable` flag) as `other`.
    fn same_content(&self, other: &Self) -> bool;
    /// Whether its content can no longer change.
    fn immutable(&self) -> bool;
}

impl Copied for ConfigMap {
    fn same_content(&self, other: &Self) -> bool {
        (&self.data, &self.binary_data, self.immutable)
            == (&other.data, &other.binary_data, other.immutable)
    }
    fn immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

impl Copied for Secret {
    fn same_content(&self, other: &Self) -> bool {
        (&self.data, &self.type_, self.immutable) == (&other.data, &other.type_, other.immutable)
    }
    fn immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

/// The root's `K` `name` in `ns`, as the cluster keeps it: its labels (and the
/// [`COPIED`] label) and annotations, none of the root's server fields.
fn as_copy<K: Resource>(mut object: K, local: Option<&ObjectMeta>) -> K {
    let meta = object.metadata_mut();
    let mut labels = std::mem::take(&mut meta.labels);
    labels.insert(COPIED.into(), "root".into());
    *meta = ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        labels,
        annotations: std::mem::take(&mut meta.annotations),
        resource_version: local.and_then(|m| m.resource_version.clone()),
        ..Default::default()
    };
    object
}

async fn copy_one<K: Copied>(ctx: &Ctx, ns: &str, name: &str) -> Result<bool, Error> {
    let root: Api<K> = ctx.root.api(Some(ns));
    let local: Api<K> = ctx.local.api(Some(ns));
    let wanted = root.get_opt(name).await?;
    let current = local.get_opt(name).await?;
    let kind = K::KIND;
    let exists = wanted.is_some();
    match (wanted, current) {
        (None, None) => {}
        (None, Some(_)) => {
            local.delete(name).await?;
            tracing::info!(
                kind,
                namespace = ns,
                name,
                "config copy removed: the root has none"
            );
        }
        (Some(wanted), None) => {
            local.create(&as_copy(wanted, None)).await?;
            tracing::info!(kind, namespace = ns, name, "config copied from the root");
        }
        (Some(wanted), Some(current)) => {
            let copy = as_copy(wanted, Some(current.metadata()));
            let same = copy.same_content(&current);
            let (a, b) = (copy.metadata(), current.metadata());
            if same && a.labels == b.labels && a.annotations == b.annotations {
                return Ok(true);
            }
            if current.immutable() && !same {
                // An immutable copy cannot change: replace it (the root's was recreated).
                local.delete(name).await?;
                let mut fresh = copy;
                fresh.metadata_mut().resource_version = None;
                local.create(&fresh).await?;
            } else {
                local.replace(&copy).await?;
            }
            tracing::info!(
                kind,
                namespace = ns,
                name,
                "config copy updated from the root"
            );
        }
    }
    Ok(exists)
}

/// Read every copy at the root again, and remove the copies no local Instance uses.
async fn sweep(ctx: &Ctx) -> Result<(), Error> {
    let used: std::collections::HashSet<Key> = ctx
        .instances
        .state()
        .iter()
        .flat_map(|i| used_by(i))
        .collect();
    let params = ListParams {
        label_selector: Some(format!("{COPIED}=root")),
        ..Default::default()
    };
    let (maps, _) = ctx.local.api::<ConfigMap>(None).list(&params).await?;
    let (secrets, _) = ctx.local.api::<Secret>(None).list(&params).await?;
    let copies = maps
        .iter()
        .map(|m| (ConfigSource::ConfigMap, &m.metadata))
        .chain(secrets.iter().map(|s| (ConfigSource::Secret, &s.metadata)));
    for (kind, meta) in copies {
        let key = (
            kind,
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone(),
        );
        if used.contains(&key) {
            continue;
        }
        let (_, ns, name) = &key;
        match kind {
            ConfigSource::ConfigMap => ctx.local.api::<ConfigMap>(Some(ns)).delete(name).await?,
            ConfigSource::Secret => ctx.local.api::<Secret>(Some(ns)).delete(name).await?,
        }
        ctx.copied.lock().expect("not poisoned").remove(&key);
        tracing::info!(kind = kind.kind(), namespace = %ns, %name, "config copy removed: no instance here uses it");
    }
    // What no Instance uses is forgotten; everything in use is read again, so a
    // change at the root reaches the copy.
    ctx.copied
        .lock()
        .expect("not poisoned")
        .retain(|key, _| used.contains(key));
    for key in used {
        copy(ctx, &key).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_copy_keeps_labels_and_annotations_and_none_of_the_roots_server_fields() {
        let mut secret = Secret {
            api_version: "v1".into(),
            kind: "Secret".into(),
            metadata: ObjectMeta {
                name: "db".into(),
                namespace: Some("shop".into()),
                uid: Some("root-uid".into()),
                resource_version: Some("77".into()),
                ..Default::default()
            },
            data: BTreeMap::from([("password".into(), "czNjcmV0".into())]),
            string_data: BTreeMap::new(),
            type_: Some("Opaque".into()),
            immutable: None,
        };
        secret.metadata.labels.insert("app".into(), "shop".into());
        let local = ObjectMeta {
            resource_version: Some("5".into()),
            ..Default::default()
        };
        let copy = as_copy(secret.clone(), Some(&local));
        assert_eq!(copy.metadata.uid, None);
        assert_eq!(copy.metadata.resource_version.as_deref(), Some("5"));
        assert_eq!(copy.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(copy.metadata.labels["app"], "shop");
        assert_eq!(copy.metadata.labels[COPIED], "root");
        assert!(copy.same_content(&secret));
        assert!(!copy.immutable());
        assert_eq!(as_copy(secret, None).metadata.resource_version, None);
    }
}
