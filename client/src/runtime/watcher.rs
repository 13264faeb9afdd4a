//! The watcher: list, then watch from the list's resourceVersion, forever.
//!
//! An explicit state machine of three states. `Empty` lists, yielding
//! [`Change::Restarted`] with the whole set, and goes to `Resume` at the list's
//! version. `Resume` opens a watch from its version and goes to `Watching`. `Watching`
//! follows the watch stream (bookmarks advance its version); a stream that ends goes
//! back to `Resume` at the last seen version, a 410 (too old) goes to `Empty` to relist,
//! and another error goes to `Resume`. Errors are yielded as items and the stream goes
//! on, so a reflector never stops.
//!
//! The machine never sleeps: [`watcher`] wraps it in [`with_backoff`], which waits after
//! each error (but not after a 410) with exponential backoff and jitter, and starts over
//! from the shortest wait after each change.

use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::backoff::{with_backoff, Backoff};
use crate::{Api, ClientError, ListParams, WatchEvent};
use crds::Resource;

/// What the watcher tells its consumer: one change of the watched set.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// Created or changed.
    Applied(K),
    /// Deleted (the object as it was last).
    Deleted(K),
    /// The complete current set, after a (re)list: replaces everything known before.
    Restarted(Vec<K>),
}

/// Where the watcher lists and watches: an [`Api`], or a fake in tests.
trait Source<K>: Send + 'static {
    /// Every object matching `params` and the list's resourceVersion.
    fn list(
        &self,
        params: &ListParams,
    ) -> impl Future<Output = crate::Result<(Vec<K>, String)>> + Send;

    /// Watch from `params.resource_version`.
    fn watch(
        &self,
        params: &ListParams,
    ) -> impl Future<Output = crate::Result<BoxStream<'static, crate::Result<WatchEvent<K>>>>> + Send;
}

impl<K: Resource> Source<K> for Api<K> {
    fn list(
        &self,
        params: &ListParams,
    ) -> impl Future<Output = crate::Result<(Vec<K>, String)>> + Send {
        Api::list(self, params)
    }

    fn watch(
        &self,
        params: &ListParams,
    ) -> impl Future<Output = crate::Result<BoxStream<'static, crate::Result<WatchEvent<K>>>>> + Send
    {
        Api::watch(self, params)
    }
}

enum State<K> {
    /// Nothing known: list.
    Empty,
    /// Following the watch stream; `version` is the last one seen.
    Watching {
        version: String,
        stream: BoxStream<'static, crate::Result<WatchEvent<K>>>,
    },
    /// Watch again from `version` (after the list, a stream that ended, or an error).
    Resume { version: String },
}

struct Machine<K, S> {
    source: S,
    params: ListParams,
    state: State<K>,
}

impl<K: Resource, S: Source<K>> Machine<K, S> {
    /// One step: the items to yield (possibly none) and the next state.
    async fn step(&mut self) -> Option<crate::Result<Change<K>>> {
        match std::mem::replace(&mut self.state, State::Empty) {
            State::Empty => {
                let params = ListParams {
                    resource_version: None,
                    ..self.params.clone()
                };
                match self.source.list(&params).await {
                    Ok((items, version)) => {
                        self.state = State::Resume { version };
                        Some(Ok(Change::Restarted(items)))
                    }
                    Err(e) => Some(Err(e)),
                }
            }
            State::Resume { version } => {
                let params = ListParams {
                    resource_version: Some(version.clone()),
                    bookmarks: true,
                    limit: None,
                    continue_token: None,
                    ..self.params.clone()
                };
                match self.source.watch(&params).await {
                    Ok(stream) => {
                        self.state = State::Watching { version, stream };
                        None
                    }
                    // Too old: start over with a fresh list.
                    Err(e) if e.is_gone() => Some(Err(e)),
                    Err(e) => {
                        self.state = State::Resume { version };
                        Some(Err(e))
                    }
                }
            }
            State::Watching {
                mut version,
                mut stream,
            } => match stream.next().await {
                None => {
                    self.state = State::Resume { version };
                    None
                }
                Some(Ok(event)) => {
                    let out = match event {
                        WatchEvent::Added(k) | WatchEvent::Modified(k) => {
                            version = version_of(&k).unwrap_or(version);
                            Some(Change::Applied(k))
                        }
                        WatchEvent::Deleted(k) => {
                            version = version_of(&k).unwrap_or(version);
                            Some(Change::Deleted(k))
                        }
                        WatchEvent::Bookmark(v) => {
                            version = v;
                            None
                        }
                    };
                    self.state = State::Watching { version, stream };
                    out.map(Ok)
                }
                // Too old: start over with a fresh list.
                Some(Err(e)) if e.is_gone() => Some(Err(e)),
                Some(Err(e)) => {
                    self.state = State::Resume { version };
                    Some(Err(e))
                }
            },
        }
    }
}

fn version_of<K: Resource>(k: &K) -> Option<String> {
    k.metadata().resource_version.clone()
}

/// The machine's items, without waits.
fn changes<K: Resource, S: Source<K>>(
    source: S,
    params: ListParams,
) -> impl Stream<Item = crate::Result<Change<K>>> + Send {
    let machine = Machine {
        source,
        params,
        state: State::Empty,
    };
    futures::stream::unfold(machine, |mut m| async move {
        let item = m.step().await;
        Some((item, m))
    })
    .filter_map(futures::future::ready)
}

/// The watcher's backoff: 100 ms after the first error, doubling up to 10 s.
fn default_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
}

/// Watch every object of `api` matching `params`, forever. See the module docs.
pub fn watcher<K: Resource>(
    api: Api<K>,
    params: ListParams,
) -> impl Stream<Item = Result<Change<K>, ClientError>> + Send {
    with_backoff(changes(api, params), default_backoff())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{Cluster, ClusterSpec};
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    fn cluster(name: &str, version: &str) -> Cluster {
        let mut c = Cluster::new(name, ClusterSpec::default());
        c.metadata.resource_version = Some(version.into());
        c
    }

    fn failure(code: u16) -> ClientError {
        ClientError::Api {
            status: Box::new(crds::Status::failure(code, "Test", "test failure")),
        }
    }

    /// One scripted answer of the fake source.
    enum Answer {
        List(crate::Result<Vec<Cluster>>, &'static str),
        Watch(crate::Result<Vec<crate::Result<WatchEvent<Cluster>>>>),
    }

    /// A source that answers from a script and records each call ("list", or "watch@V").
    #[derive(Clone, Default)]
    struct Fake {
        script: Arc<Mutex<VecDeque<Answer>>>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Fake {
        /// The next answer (`None`: the script is over), recording the call.
        fn next(&self, call: String) -> Option<Answer> {
            self.calls.lock().unwrap().push(call);
            self.script.lock().unwrap().pop_front()
        }
    }

    impl Source<Cluster> for Fake {
        async fn list(&self, _: &ListParams) -> crate::Result<(Vec<Cluster>, String)> {
            match self.next("list".into()) {
                Some(Answer::List(items, version)) => items.map(|i| (i, version.to_string())),
                Some(Answer::Watch(_)) => panic!("a list where the script has a watch"),
                None => futures::future::pending().await,
            }
        }

        async fn watch(
            &self,
            params: &ListParams,
        ) -> crate::Result<BoxStream<'static, crate::Result<WatchEvent<Cluster>>>> {
            let at = params.resource_version.clone().unwrap_or_default();
            match self.next(format!("watch@{at}")) {
                Some(Answer::Watch(events)) => events.map(|e| futures::stream::iter(e).boxed()),
                Some(Answer::List(..)) => panic!("a watch where the script has a list"),
                None => Ok(futures::stream::pending().boxed()),
            }
        }
    }

    fn describe(item: &crate::Result<Change<Cluster>>) -> String {
        let names = |v: &[Cluster]| {
            v.iter()
                .map(|c| c.metadata.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        match item {
            Ok(Change::Restarted(all)) => format!("restarted[{}]", names(all)),
            Ok(Change::Applied(c)) => format!("applied {}", c.metadata.name),
            Ok(Change::Deleted(c)) => format!("deleted {}", c.metadata.name),
            Err(e) => format!("error {}", e.code().unwrap_or_default()),
        }
    }

    /// Run the watcher over `script` until it has yielded `n` items: the items, and the
    /// calls it made.
    async fn run(script: Vec<Answer>, n: usize) -> (Vec<String>, Vec<String>) {
        let fake = Fake::default();
        fake.script.lock().unwrap().extend(script);
        let items = changes(fake.clone(), ListParams::default())
            .take(n)
            .map(|i| describe(&i))
            .collect()
            .await;
        let calls = fake.calls.lock().unwrap().clone();
        (items, calls)
    }

    #[tokio::test]
    async fn the_machine_lists_watches_resumes_and_relists() {
        use WatchEvent::*;
        let (items, calls) = run(
            vec![
                Answer::List(Err(failure(500)), ""),
                Answer::List(Ok(vec![cluster("a", "1")]), "5"),
                Answer::Watch(Ok(vec![
                    Ok(Added(cluster("b", "6"))),
                    Ok(Bookmark("9".into())),
                ])),
                // The stream ended: resumed from the bookmark, not relisted.
                Answer::Watch(Ok(vec![Ok(Deleted(cluster("a", "10"))), Err(failure(500))])),
                // An error in the stream: resumed from the last version.
                Answer::Watch(Err(failure(503))),
                Answer::Watch(Ok(vec![Err(failure(410))])),
                // Too old: relisted.
                Answer::List(Ok(vec![cluster("b", "12")]), "12"),
            ],
            8,
        )
        .await;
        assert_eq!(
            items,
            [
                "error 500",
                "restarted[a]",
                "applied b",
                "deleted a",
                "error 500",
                "error 503",
                "error 410",
                "restarted[b]",
            ]
        );
        assert_eq!(
            calls,
            ["list", "list", "watch@5", "watch@9", "watch@10", "watch@10", "list"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_waits_after_errors_but_not_after_a_410() {
        let fake = Fake::default();
        fake.script.lock().unwrap().extend([
            Answer::List(Err(failure(500)), ""),
            Answer::List(Err(failure(500)), ""),
            Answer::List(Ok(vec![]), "1"),
            Answer::Watch(Err(failure(410))),
            Answer::List(Ok(vec![]), "2"),
        ]);
        let start = tokio::time::Instant::now();
        let backoff =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).without_jitter();
        let at: Vec<(String, u128)> = with_backoff(changes(fake, ListParams::default()), backoff)
            .take(5)
            .map(|i| (describe(&i), start.elapsed().as_millis()))
            .collect()
            .await;
        let want: Vec<(String, u128)> = [
            ("error 500", 0),
            ("error 500", 100),
            ("restarted[]", 300),
            ("error 410", 300),
            ("restarted[]", 300),
        ]
        .iter()
        .map(|(w, t)| (w.to_string(), *t))
        .collect();
        assert_eq!(at, want);
    }
}
