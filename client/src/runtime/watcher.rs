//! The watcher: list, then watch from the list's resourceVersion, forever.
//!
//! An explicit state machine: `Empty` lists (yielding [`Event::Restarted`] with the
//! whole set), `Watching` follows the watch stream; a stream that ends is resumed from
//! the last seen version (bookmarks advance it), a 410 (too old) goes back to `Empty`
//! and relists, and a transport error is retried after a backoff with jitter. Errors
//! are yielded as items and the stream goes on, so a reflector never stops.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::{Api, ClientError, ListParams, WatchEvent};
use crds::Resource;

/// What the watcher tells its consumer.
#[derive(Debug, Clone)]
pub enum Event<K> {
    /// Created or changed.
    Applied(K),
    Deleted(K),
    /// The complete current set, after a (re)list: replaces everything known before.
    Restarted(Vec<K>),
}

enum State<K> {
    Empty,
    Watching {
        version: String,
        stream: BoxStream<'static, crate::Result<WatchEvent<K>>>,
    },
    /// Watch again from `version` (after the stream ended or a transport error).
    Resume {
        version: String,
    },
}

struct Machine<K: Resource> {
    api: Api<K>,
    params: ListParams,
    state: State<K>,
    backoff: Backoff,
}

/// Exponential backoff with jitter, reset after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    current: Duration,
    min: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Backoff {
            current: min,
            min,
            max,
            seed,
        }
    }

    /// The next delay: the current step with ±50% jitter; the step then doubles.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter need not be cryptographic.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let factor = 0.5 + (self.seed % 1000) as f64 / 1000.0;
        let delay = self.current.mul_f64(factor);
        self.current = (self.current * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

impl<K: Resource> Machine<K> {
    /// One step: the items to yield (possibly none) and the next state.
    async fn step(&mut self) -> Vec<crate::Result<Event<K>>> {
        match std::mem::replace(&mut self.state, State::Empty) {
            State::Empty => match self
                .api
                .list(&ListParams {
                    resource_version: None,
                    ..self.params.clone()
                })
                .await
            {
                Ok((items, version)) => {
                    self.backoff.reset();
                    self.state = State::Resume { version };
                    vec![Ok(Event::Restarted(items))]
                }
                Err(e) => {
                    tokio::time::sleep(self.backoff.next_delay()).await;
                    vec![Err(e)]
                }
            },
            State::Resume { version } => {
                let params = ListParams {
                    resource_version: Some(version.clone()),
                    bookmarks: true,
                    limit: None,
                    continue_token: None,
                    ..self.params.clone()
                };
                match self.api.watch(&params).await {
                    Ok(stream) => {
                        self.state = State::Watching { version, stream };
                        vec![]
                    }
                    Err(e) if e.is_gone() => vec![Err(e)],
                    Err(e) => {
                        tokio::time::sleep(self.backoff.next_delay()).await;
                        self.state = State::Resume { version };
                        vec![Err(e)]
                    }
                }
            }
            State::Watching {
                mut version,
                mut stream,
            } => match stream.next().await {
                None => {
                    self.state = State::Resume { version };
                    vec![]
                }
                Some(Ok(event)) => {
                    self.backoff.reset();
                    let out = match event {
                        WatchEvent::Added(k) | WatchEvent::Modified(k) => {
                            version = version_of(&k).unwrap_or(version);
                            Some(Event::Applied(k))
                        }
                        WatchEvent::Deleted(k) => {
                            version = version_of(&k).unwrap_or(version);
                            Some(Event::Deleted(k))
                        }
                        WatchEvent::Bookmark(v) => {
                            version = v;
                            None
                        }
                    };
                    self.state = State::Watching { version, stream };
                    out.into_iter().map(Ok).collect()
                }
                // Too old: start over with a fresh list.
                Some(Err(e)) if e.is_gone() => vec![Err(e)],
                Some(Err(e)) => {
                    tokio::time::sleep(self.backoff.next_delay()).await;
                    self.state = State::Resume { version };
                    vec![Err(e)]
                }
            },
        }
    }
}

fn version_of<K: Resource>(k: &K) -> Option<String> {
    k.metadata().resource_version.clone()
}

/// Watch every object of `api` matching `params`, forever. See the module docs.
pub fn watcher<K: Resource>(
    api: Api<K>,
    params: ListParams,
) -> impl Stream<Item = Result<Event<K>, ClientError>> + Send {
    let machine = Machine {
        api,
        params,
        state: State::Empty,
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
    };
    futures::stream::unfold(machine, |mut m| async move {
        let items = m.step().await;
        Some((futures::stream::iter(items), m))
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(150));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(1500)));
        assert!(
            delays[7] >= Duration::from_millis(500),
            "capped at max, not below half of it"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(150));
    }
}
