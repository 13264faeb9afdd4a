//! Backoff: exponential delays with jitter ([`Backoff`]), and a stream adapter
//! ([`with_backoff`]) that waits after each error of a stream of results before it polls
//! the stream again. The watcher's state machine never sleeps; its consumer's stream is
//! wrapped in [`with_backoff`]. The controller keeps one [`Backoff`] per failing key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::ClientError;

/// Exponential backoff with jitter: each delay is the current step ±50%, and the step
/// doubles (up to a maximum) after each delay; [`reset`](Self::reset) goes back to the
/// first step after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    current: Duration,
    min: Duration,
    max: Duration,
    seed: u64,
    jitter: bool,
}

impl Backoff {
    /// A backoff whose first step is `min` and whose steps stop growing at `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            current: min,
            min,
            max,
            seed: fresh_seed(),
            jitter: true,
        }
    }

    /// A new backoff with the same bounds, at its first step, with jitter of its own
    /// (so that keys failing together do not retry together).
    pub fn fresh(&self) -> Self {
        Backoff {
            current: self.min,
            seed: fresh_seed(),
            ..self.clone()
        }
    }

    /// The same backoff without jitter: every delay is exactly the current step.
    #[cfg(test)]
    pub(crate) fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The next delay: the current step with ±50% jitter; the step then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = if self.jitter {
            // xorshift64: jitter need not be cryptographic.
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let factor = 0.5 + (self.seed % 1000) as f64 / 1000.0;
            self.current.mul_f64(factor)
        } else {
            self.current
        };
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// A nonzero seed that differs between calls, even within one clock tick.
fn fresh_seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    (nanos ^ call.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1
}

/// Pass on every item of `stream`; after an error, wait `backoff`'s next delay before
/// polling `stream` again, and after a success go back to its first step. A 410 (too
/// old) is passed on without a wait: it asks for a relist, which is not a failure.
pub fn with_backoff<T, S>(
    stream: S,
    backoff: Backoff,
) -> impl Stream<Item = Result<T, ClientError>> + Send
where
    S: Stream<Item = Result<T, ClientError>> + Send + 'static,
    T: Send,
{
    let state = (stream.boxed(), backoff, None::<Duration>);
    futures::stream::unfold(state, |(mut stream, mut backoff, wait)| async move {
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
        let item = stream.next().await?;
        let wait = match &item {
            Ok(_) => {
                backoff.reset();
                None
            }
            Err(e) if e.is_gone() => None,
            Err(_) => Some(backoff.next_delay()),
        };
        Some((item, (stream, backoff, wait)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

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

    #[test]
    fn without_jitter_the_steps_double_up_to_the_cap() {
        let mut b =
            Backoff::new(Duration::from_millis(100), Duration::from_millis(500)).without_jitter();
        let ms: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 500, 500]);
        let mut fresh = b.fresh();
        assert_eq!(
            fresh.next_delay(),
            Duration::from_millis(100),
            "starts over"
        );
    }

    fn failure(code: u16) -> ClientError {
        ClientError::Api {
            status: Box::new(crds::Status::failure(code, "Test", "test failure")),
        }
    }

    /// When each item of `items` is passed on, in ms after the start (paused time).
    async fn passed_at(items: Vec<Result<u32, ClientError>>) -> Vec<(String, u128)> {
        let start = Instant::now();
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).without_jitter();
        with_backoff(futures::stream::iter(items), b)
            .map(|item| {
                let what = match item {
                    Ok(n) => n.to_string(),
                    Err(e) => format!("E{}", e.code().unwrap_or_default()),
                };
                (what, start.elapsed().as_millis())
            })
            .collect()
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn errors_wait_longer_each_time_and_a_success_starts_over() {
        let got = passed_at(vec![
            Ok(1),
            Err(failure(500)),
            Err(failure(500)),
            Err(failure(503)),
            Ok(2),
            Err(failure(500)),
            Ok(3),
        ])
        .await;
        let want = [
            ("1", 0),
            ("E500", 0),
            ("E500", 100),
            ("E503", 300),
            ("2", 700),
            ("E500", 700),
            ("3", 800),
        ];
        let want: Vec<(String, u128)> = want.iter().map(|(w, t)| (w.to_string(), *t)).collect();
        assert_eq!(got, want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_410_is_passed_on_without_a_wait() {
        let got = passed_at(vec![Err(failure(410)), Err(failure(410)), Ok(1)]).await;
        let want: Vec<(String, u128)> = [("E410", 0), ("E410", 0), ("1", 0)]
            .iter()
            .map(|(w, t)| (w.to_string(), *t))
            .collect();
        assert_eq!(got, want);
    }
}
