//! Recording `Event`s about objects, as controllers do for `describe` to show — off
//! the caller's path and aggregated, as client-go's event broadcaster and correlator do.
//!
//! [`Recorder::record`] never waits: it hands the Event to the recorder's writer task and
//! returns. A reconcile that places an Instance must not wait for an Event's commit
//! (that wait bounded placement at a few hundred a second). The writer:
//!
//! - counts repeats of one (object, reason, message) into one Event: its `count` and
//!   `lastTimestamp` go up, no new object is made;
//! - **correlates**: Events of one source, type and reason about the objects of one
//!   *group* — the objects a controller owner shares, e.g. the Instances of one Service —
//!   are recorded one by one for the first [`AGGREGATE_AFTER`] objects within
//!   [`AGGREGATE_WINDOW`]; after that they are combined into one Event about the owner,
//!   with the message `(combined from similar events): <latest message>` and a count
//!   (Kubernetes' `EventAggregator` does the same per object). An object without a
//!   controller owner is a group of its own;
//! - writes what piled up once per [`FLUSH_EVERY`]: one write per distinct Event,
//!   however often it happened in between; a combined Event, once written, at most
//!   once per [`COMBINED_EVERY`] (a burst of a 1,000-Instance Service would otherwise
//!   rewrite its combined Event twice a second for as long as it lasts);
//! - holds at most [`QUEUE`] Events not yet taken up; beyond that new ones are dropped
//!   (and the drop logged), as client-go's broadcaster drops on a full queue: an Event
//!   is worth less than the work it reports.
//!
//! Writing is best effort: a failed write is logged and its Event lost.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use crds::{Event, EventType, ObjectMeta, ObjectReference, Resource, Time, API_VERSION};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{Api, Client};

/// Distinct objects of one group whose similar Events are recorded one by one, per
/// [`AGGREGATE_WINDOW`]; the Events of further objects are combined.
pub const AGGREGATE_AFTER: usize = 10;
/// How long the correlator remembers the objects of a group (Kubernetes: 10 minutes).
pub const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
/// How often the writer writes the Events that piled up.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// How often, at most, the count of a combined Event that was written is written again
/// while its group's occurrences go on.
pub const COMBINED_EVERY: Duration = Duration::from_secs(10);
/// Events queued for the writer at most.
pub const QUEUE: usize = 4096;
/// Groups (and written Events) the writer remembers at most; beyond, it forgets them all
/// and starts over (the worst case is a few more single Events, or a read).
const REMEMBERED: usize = 4096;
/// Prefix of the message of an Event that combines similar ones.
pub const COMBINED: &str = "(combined from similar events): ";

/// Records Events on behalf of one component (see the module docs). Clones share one
/// writer, which ends once every clone is dropped, after writing what is left.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Occurrence>,
    dropped: Arc<AtomicU64>,
}

/// One thing that happened, as a caller reported it.
#[derive(Debug, Clone)]
struct Occurrence {
    involved: ObjectReference,
    /// The involved object's controller owner, whose Events combine its objects'.
    group: Option<ObjectReference>,
    type_: EventType,
    reason: String,
    message: String,
    at: Time,
}

impl Recorder {
    /// A recorder writing through `client`, naming `source` as the Events' source.
    /// Starts its writer task: call from within a Tokio runtime.
    pub fn new(client: Client, source: &str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            client,
            source: source.to_string(),
            correlator: Correlator::default(),
            pending: HashMap::new(),
            written: HashMap::new(),
        };
        tokio::spawn(writer.run(rx));
        Recorder {
            tx,
            dropped: Arc::default(),
        }
    }

    /// Record an Event about `object`. Returns at once; the Event is written within
    /// [`FLUSH_EVERY`] (see the module docs). Its group is its controller owner.
    pub fn record<K: Resource>(&self, object: &K, type_: EventType, reason: &str, message: &str) {
        let meta = object.metadata();
        let group = meta.controller().map(|o| ObjectReference {
            kind: o.kind.clone(),
            name: o.name.clone(),
            namespace: meta.namespace.clone(),
            uid: Some(o.uid.clone()),
        });
        self.record_in(object, group, type_, reason, message);
    }

    /// Like [`record`](Self::record), with the group given: for objects whose owner is
    /// known but not referenced (a cluster's copy of an Instance names its Service,
    /// which lives at the root).
    pub fn record_in<K: Resource>(
        &self,
        object: &K,
        group: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        let meta = object.metadata();
        let occurrence = Occurrence {
            involved: ObjectReference {
                kind: K::KIND.into(),
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                uid: meta.uid.clone(),
            },
            group,
            type_,
            reason: reason.into(),
            message: message.into(),
            at: Utc::now(),
        };
        if self.tx.try_send(occurrence).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_power_of_two() {
                tracing::warn!(reason, dropped = n, "event queue full; dropping events");
            }
        }
    }
}

/// What the correlator made of an occurrence: the Event to count it in.
#[derive(Debug, Clone, PartialEq)]
struct Recorded {
    involved: ObjectReference,
    message: String,
    /// Whether it was combined into its group's Event.
    combined: bool,
}

/// A group's similar Events: when the window opened and which objects it has seen.
struct Seen {
    since: Instant,
    objects: HashSet<String>,
}

/// Decides which Event an occurrence counts in (see the module docs). Pure: no IO.
#[derive(Default)]
struct Correlator {
    groups: HashMap<(String, EventType, String), Seen>,
}

/// The key of an object in messages and maps: `kind/namespace/name/uid`.
fn key_of(r: &ObjectReference) -> String {
    format!(
        "{}/{}/{}/{}",
        r.kind,
        r.namespace.as_deref().unwrap_or(""),
        r.name,
        r.uid.as_deref().unwrap_or("")
    )
}

impl Correlator {
    fn correlate(&mut self, o: &Occurrence, now: Instant) -> Recorded {
        let single = Recorded {
            involved: o.involved.clone(),
            message: o.message.clone(),
            combined: false,
        };
        let Some(group) = &o.group else {
            return single;
        };
        if self.groups.len() >= REMEMBERED {
            self.groups
                .retain(|_, s| now.duration_since(s.since) < AGGREGATE_WINDOW);
            if self.groups.len() >= REMEMBERED {
                self.groups.clear();
            }
        }
        let key = (key_of(group), o.type_, o.reason.clone());
        let seen = self.groups.entry(key).or_insert_with(|| Seen {
            since: now,
            objects: HashSet::new(),
        });
        if now.duration_since(seen.since) >= AGGREGATE_WINDOW {
            seen.since = now;
            seen.objects.clear();
        }
        let object = key_of(&o.involved);
        if seen.objects.contains(&object) || seen.objects.len() < AGGREGATE_AFTER {
            seen.objects.insert(object);
            return single;
        }
        Recorded {
            involved: group.clone(),
            message: format!("{COMBINED}{}", o.message),
            combined: true,
        }
    }
}

/// The name of the Event counting `recorded` of `reason`: the object's name (cut to
/// 200 characters) and a hash of what makes it distinct — for a combined Event, not its
/// message, which follows the latest occurrence.
fn event_name(recorded: &Recorded, type_: &EventType, reason: &str) -> String {
    let r = &recorded.involved;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    if recorded.combined {
        (&r.kind, &r.name, &r.uid, *type_ as u8, reason, COMBINED).hash(&mut hasher);
    } else {
        (&r.kind, &r.name, &r.uid, reason, &recorded.message).hash(&mut hasher);
    }
    let prefix: String = r.name.chars().take(200).collect();
    format!("{prefix}.{:016x}", hasher.finish())
}

/// The recorder's writer task (see the module docs).
struct Writer {
    client: Client,
    source: String,
    correlator: Correlator,
    /// Events counted since they were last written, by name: the Event as it would
    /// be created (its `count` is the occurrences since then), and whether it is a
    /// combined one.
    pending: HashMap<String, (Event, bool)>,
    /// Events this writer wrote, by name.
    written: HashMap<String, Written>,
}

/// An Event as this writer last wrote it.
struct Written {
    version: String,
    count: u32,
    at: Instant,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Occurrence>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                o = rx.recv() => match o {
                    Some(o) => self.count(o),
                    None => break,
                },
                _ = tick.tick(), if !self.pending.is_empty() => self.flush(false).await,
            }
        }
        self.flush(true).await;
    }

    /// Count `o` in the Event the correlator chooses.
    fn count(&mut self, o: Occurrence) {
        let recorded = self.correlator.correlate(&o, Instant::now());
        let name = event_name(&recorded, &o.type_, &o.reason);
        if let Some((e, _)) = self.pending.get_mut(&name) {
            e.count += 1;
            e.message = recorded.message;
            e.last_timestamp = Some(o.at);
            return;
        }
        let namespace = recorded
            .involved
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let event = Event {
            api_version: API_VERSION.into(),
            kind: "Event".into(),
            metadata: ObjectMeta {
                name: name.clone(),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: recorded.involved,
            reason: o.reason,
            message: recorded.message,
            type_: o.type_,
            count: 1,
            first_timestamp: Some(o.at),
            last_timestamp: Some(o.at),
            source: self.source.clone(),
        };
        self.pending.insert(name, (event, recorded.combined));
    }

    /// Write the pending Events, but for combined ones written less than
    /// [`COMBINED_EVERY`] ago (unless `all`, at the end): they wait, counting on.
    async fn flush(&mut self, all: bool) {
        if self.written.len() > REMEMBERED {
            self.written.clear();
        }
        for (name, (event, combined)) in std::mem::take(&mut self.pending) {
            if !all && combined && self.written_within(&name, COMBINED_EVERY) {
                self.pending.insert(name, (event, combined));
                continue;
            }
            if let Err(e) = self.write(&name, &event).await {
                tracing::warn!(reason = %event.reason, error = %e, "could not record event");
            }
        }
    }

    /// Whether the Event `name` was written by this writer less than `ago` ago.
    fn written_within(&self, name: &str, ago: Duration) -> bool {
        self.written.get(name).is_some_and(|w| w.at.elapsed() < ago)
    }

    /// Create `event`, or add its count to the stored Event of its name.
    async fn write(&mut self, name: &str, event: &Event) -> crate::Result<()> {
        let api: Api<Event> = self.client.api(event.metadata.namespace.as_deref());
        let mut known = self.written.remove(name).map(|w| (w.version, w.count));
        for _ in 0..3 {
            let (version, count) = match known.take() {
                Some(k) => k,
                None => match api.create(event).await {
                    Err(e) if e.is_conflict() => match api.get(name).await {
                        Ok(existing) => (
                            existing.metadata.resource_version.unwrap_or_default(),
                            existing.count,
                        ),
                        Err(e) if e.is_not_found() => continue, // deleted in between
                        Err(e) => return Err(e),
                    },
                    Err(e) => return Err(e),
                    Ok(created) => {
                        self.remember(name, &created);
                        return Ok(());
                    }
                },
            };
            let patch = json!({
                "metadata": {"resourceVersion": version},
                "count": count + event.count,
                "message": event.message,
                "lastTimestamp": event.last_timestamp,
            });
            match api.patch(name, &patch).await {
                // Changed (or deleted) by someone else: read it again.
                Err(e) if e.is_conflict() || e.is_not_found() => continue,
                Err(e) => return Err(e),
                Ok(updated) => {
                    self.remember(name, &updated);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn remember(&mut self, name: &str, stored: &Event) {
        let version = stored.metadata.resource_version.clone().unwrap_or_default();
        let written = Written {
            version,
            count: stored.count,
            at: Instant::now(),
        };
        self.written.insert(name.to_string(), written);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(n: usize, service: Option<&str>) -> Occurrence {
        Occurrence {
            involved: ObjectReference {
                kind: "Instance".into(),
                name: format!("web-{n}"),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{n}")),
            },
            group: service.map(|s| ObjectReference {
                kind: "Service".into(),
                name: s.into(),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{s}")),
            }),
            type_: EventType::Normal,
            reason: "Placed".into(),
            message: format!("placed on cluster c{}", n % 3),
            at: Utc::now(),
        }
    }

    #[test]
    fn the_objects_of_a_group_beyond_the_first_ten_are_combined() {
        let mut c = Correlator::default();
        let now = Instant::now();
        let recorded: Vec<Recorded> = (0..25)
            .map(|n| c.correlate(&instance(n, Some("web")), now))
            .collect();
        for (n, r) in recorded.iter().enumerate() {
            if n < AGGREGATE_AFTER {
                assert!(!r.combined, "{n}");
                assert_eq!(r.involved.name, format!("web-{n}"));
            } else {
                assert!(r.combined, "{n}");
                assert_eq!(r.involved.kind, "Service");
                assert_eq!(r.involved.name, "web");
                assert_eq!(r.message, format!("{COMBINED}placed on cluster c{}", n % 3));
            }
        }
        // Every combined one counts in one Event, whatever its message.
        let names: HashSet<String> = recorded[AGGREGATE_AFTER..]
            .iter()
            .map(|r| event_name(r, &EventType::Normal, "Placed"))
            .collect();
        assert_eq!(names.len(), 1);
        // An object already seen stays on its own Event.
        assert!(!c.correlate(&instance(3, Some("web")), now).combined);
    }

    #[test]
    fn groups_reasons_and_windows_are_apart() {
        let mut c = Correlator::default();
        let now = Instant::now();
        for n in 0..AGGREGATE_AFTER {
            c.correlate(&instance(n, Some("web")), now);
        }
        // Another Service, another reason, another type: each has its own ten.
        assert!(!c.correlate(&instance(50, Some("db")), now).combined);
        let mut other_reason = instance(51, Some("web"));
        other_reason.reason = "FailedPlacement".into();
        assert!(!c.correlate(&other_reason, now).combined);
        let mut warning = instance(52, Some("web"));
        warning.type_ = EventType::Warning;
        assert!(!c.correlate(&warning, now).combined);
        // No owner: never combined.
        for n in 100..130 {
            assert!(!c.correlate(&instance(n, None), now).combined);
        }
        // The same group, within the window: combined; after it: single again.
        assert!(c.correlate(&instance(60, Some("web")), now).combined);
        let later = now + AGGREGATE_WINDOW;
        assert!(!c.correlate(&instance(61, Some("web")), later).combined);
    }

    #[test]
    fn single_events_are_named_by_object_reason_and_message() {
        let a = Recorded {
            involved: instance(1, None).involved,
            message: "placed on cluster c1".into(),
            combined: false,
        };
        let mut b = a.clone();
        b.message = "placed on cluster c2".into();
        let name = event_name(&a, &EventType::Normal, "Placed");
        assert!(name.starts_with("web-1."), "{name}");
        assert_eq!(name, event_name(&a.clone(), &EventType::Normal, "Placed"));
        assert_ne!(name, event_name(&b, &EventType::Normal, "Placed"));
        assert_ne!(name, event_name(&a, &EventType::Normal, "Started"));
    }
}
