//! Recording `Event`s about objects, as controllers do for `describe` to show.
//!
//! Repeats of the same (object, reason, message) increment one Event's `count` and
//! `lastTimestamp` instead of piling up new objects.

use std::hash::{Hash, Hasher};

use chrono::Utc;
use crds::{Event, EventType, ObjectMeta, ObjectReference, Resource, API_VERSION};
use serde_json::json;

use crate::{Api, Client};

/// Records Events on behalf of one component.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    source: String,
}

impl Recorder {
    /// A recorder writing through `client`, naming `source` as the Events' source.
    pub fn new(client: Client, source: &str) -> Self {
        Recorder {
            client,
            source: source.to_string(),
        }
    }

    /// Record an event about `object`; failures are logged, never fatal.
    pub async fn record<K: Resource>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = self.try_record(object, type_, reason, message).await {
            tracing::warn!(reason, error = %e, "could not record event");
        }
    }

    async fn try_record<K: Resource>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> crate::Result<()> {
        let meta = object.metadata();
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (K::KIND, &meta.name, &meta.uid, reason, message).hash(&mut hasher);
        let prefix: String = meta.name.chars().take(200).collect();
        let name = format!("{prefix}.{:016x}", hasher.finish());
        let api: Api<Event> = self.client.api(Some(&namespace));
        let now = Utc::now();
        let event = Event {
            api_version: API_VERSION.into(),
            kind: "Event".into(),
            metadata: ObjectMeta {
                name: name.clone(),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: K::KIND.into(),
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                uid: meta.uid.clone(),
            },
            reason: reason.into(),
            message: message.into(),
            type_,
            count: 1,
            first_timestamp: Some(now),
            last_timestamp: Some(now),
            source: self.source.clone(),
        };
        for _ in 0..3 {
            // Most events are new: create first; count up only when it exists (409).
            match api.create(&event).await {
                Err(e) if e.is_conflict() => {}
                other => return other.map(|_| ()),
            }
            let Some(existing) = api.dynamic().get_opt(&name).await? else {
                continue; // deleted in between: create again
            };
            let count = existing["count"].as_u64().unwrap_or(1) + 1;
            let patch = json!({
                "metadata": {"resourceVersion": existing["metadata"]["resourceVersion"]},
                "count": count,
                "lastTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            match api.patch(&name, &patch).await {
                Err(e) if e.is_conflict() => continue,
                other => return other.map(|_| ()),
            }
        }
        Ok(())
    }
}
