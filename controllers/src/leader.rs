//! Leader election on a `Lease`, as kube-controller-manager's `--leader-elect` (and
//! client-go's `leaderelection`): of several processes that share one store, only the
//! one holding the Lease runs the controllers; the others stand by and take over when
//! it stops renewing.
//!
//! [`run_elected`] is the loop: acquire the Lease, run the work while renewing it, stop
//! the work when leadership is lost, and release the Lease at shutdown.
//!
//! - **Acquire.** A Lease that does not exist is created, naming this process. One held
//!   by another process counts as expired only once this process has seen the same
//!   version of it (same `resourceVersion`) unchanged for the lease duration by its own
//!   monotonic clock: the holder's `renewTime` is another machine's wall clock and is
//!   never compared with ours. An expired Lease, or a released one (no holder), is
//!   taken over with an update at the `resourceVersion` read, so of two candidates
//!   only one wins (the other gets a 409); `leaseTransitions` goes up by one and
//!   `acquireTime` is now. Candidates retry every retry period, with a little jitter.
//! - **Lead.** The leader renews every retry period (`renewTime`, at the version it
//!   last wrote). When no renewal succeeded for the renew deadline, or the Lease names
//!   another holder, leadership is lost: the work's token is cancelled and the work is
//!   awaited to its end before this process tries to acquire again.
//! - **Release.** When `shutdown` is cancelled, the work is cancelled and awaited, then
//!   the Lease, if this process still holds it, is released (no holder, duration 1 s)
//!   so that a standby takes over at its next retry rather than after the lease
//!   duration (client-go's `ReleaseOnCancel`).
//!
//! Why one leader at a time: a candidate waits the lease duration from when *it* saw
//! the last renewal, which is after the renewal's request started; the leader stops
//! at most the renew deadline after that start (every request is cut off at the
//! deadline). The difference, `lease_duration - renew_deadline` (5 s by default), is
//! the time the work has to stop once cancelled (and the slack for clocks running at
//! different rates): work that takes longer to stop may overlap its successor's.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use chrono::Utc;
use client::{Api, Client, ClientError};
use crds::{Lease, LeaseSpec, Time};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Kubernetes' default lease duration (`--leader-elect-lease-duration`).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Kubernetes' default renew deadline (`--leader-elect-renew-deadline`).
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Kubernetes' default retry period (`--leader-elect-retry-period`).
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The most a retry period is stretched by jitter (client-go's `JitterFactor` is 1.2).
const JITTER: f64 = 0.2;

/// How to take part in the election of one Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// Name of the cluster-scoped Lease (one of `crds::LEADER_LEASES`).
    pub lease: String,
    /// This process's name in `holderIdentity`, unique among the candidates (see
    /// [`default_identity`]).
    pub identity: String,
    /// How long candidates wait, from the last change of the Lease they saw, before
    /// they take it over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal. Shorter than
    /// `lease_duration`: the difference is the time its work has to stop.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews. Shorter than
    /// `renew_deadline`.
    pub retry_period: Duration,
}

impl Default for LeaderConfig {
    /// Kubernetes' durations (15 s, 10 s, 2 s), with no Lease and no identity: the
    /// caller sets both ([`LeaderConfig::new`]).
    fn default() -> Self {
        LeaderConfig {
            lease: String::new(),
            identity: String::new(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }
}

impl LeaderConfig {
    /// The election of Lease `lease` as `identity`, with Kubernetes' durations.
    pub fn new(lease: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaderConfig {
            lease: lease.into(),
            identity: identity.into(),
            ..Default::default()
        }
    }

    /// Whether the settings can work: a Lease and an identity, and
    /// `0 < retry_period < renew_deadline < lease_duration`. The error says which
    /// setting is wrong, for a command-line flag's message.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease.is_empty() {
            return Err("leader election needs the name of a Lease".into());
        }
        if self.identity.is_empty() {
            return Err("leader election needs an identity for this process".into());
        }
        if self.retry_period.is_zero() {
            return Err("the leader-election retry period must be greater than zero".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "the leader-election renew deadline ({:?}) must be shorter than the lease duration ({:?}): the difference is the time a leader that lost its Lease has to stop its controllers",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!(
                "the leader-election retry period ({:?}) must be shorter than the renew deadline ({:?}): a leader must get to retry a failed renewal before the deadline",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }

    /// The lease duration as `leaseDurationSeconds` (whole seconds, rounded up).
    fn duration_seconds(&self) -> u32 {
        (self.lease_duration.as_secs_f64().ceil() as u32).max(1)
    }
}

/// An identity unique to this process: the host's name, `_`, and random hex digits
/// (as kube-controller-manager's `hostname_uuid`).
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}_{:016x}", random_u64())
}

/// Run `work` whenever this process holds the Lease `config.lease`, until `shutdown`.
///
/// `work` is called (and its future spawned) each time leadership is acquired, with a
/// token that is cancelled when leadership is lost or at shutdown; the next call comes
/// only after that future ended. Work that ends on its own, or panics, gives the Lease
/// up (a standby may take over) and this process stands for election again. At
/// shutdown the work is cancelled and awaited and the Lease released; then this
/// returns. Dropping the returned future instead cancels the work's token but does
/// not wait for it.
///
/// An invalid `config` ([`LeaderConfig::validate`]) is logged as an error and nothing
/// runs: callers check it first.
pub async fn run_elected<F, Fut>(
    client: Client,
    config: LeaderConfig,
    shutdown: CancellationToken,
    mut work: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if let Err(error) = config.validate() {
        tracing::error!(lease = %config.lease, %error, "leader election not started");
        return;
    }
    let mut elector = Elector {
        api: client.api::<Lease>(None),
        config,
        observed: None,
        held: None,
    };
    loop {
        let Some(renewed) = elector.acquire(&shutdown).await else {
            return;
        };
        if shutdown.is_cancelled() {
            elector.release().await;
            return;
        }
        let token = CancellationToken::new();
        let _cancel_on_drop = token.clone().drop_guard();
        let mut running = tokio::spawn(work(token.clone()));
        let end = elector.lead(renewed, &shutdown, &mut running).await;
        elector.held = None;
        let (lease, identity) = (&elector.config.lease, &elector.config.identity);
        let (result, then) = match end {
            End::WorkEnded(result) => {
                tracing::warn!(%lease, %identity, "the elected work ended on its own; giving the Lease up");
                (result, Then::Stand)
            }
            End::Lost(reason) => {
                tracing::info!(%lease, %identity, %reason, "lost leadership; stopping the work");
                token.cancel();
                ((&mut running).await, Then::Acquire)
            }
            End::Shutdown => {
                token.cancel();
                ((&mut running).await, Then::Return)
            }
        };
        if let Err(e) = result {
            tracing::error!(%lease, %identity, error = %e, "the elected work failed");
        }
        tracing::info!(%lease, %identity, "the elected work stopped");
        match then {
            Then::Acquire => {}
            Then::Return => {
                elector.release().await;
                return;
            }
            Then::Stand => {
                elector.release().await;
                // Let a standby have a go before this process stands again.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(jittered(elector.config.retry_period)) => {}
                }
            }
        }
    }
}

/// What [`run_elected`] does once the work of a term stopped.
enum Then {
    /// Try to acquire the Lease again (leadership was lost: nothing to release).
    Acquire,
    /// Release the Lease and return (shutdown).
    Return,
    /// Release the Lease and stand for election again after a retry period.
    Stand,
}

/// Why a term of leadership ended.
enum End {
    /// `shutdown` was cancelled.
    Shutdown,
    /// The Lease could not be renewed in time, or names another holder.
    Lost(String),
    /// The work's future ended (or panicked) without being cancelled.
    WorkEnded(Result<(), tokio::task::JoinError>),
}

/// What one attempt to acquire or renew found.
enum Outcome {
    /// This process holds the Lease, as stored after its write.
    Held {
        /// Its `leaseTransitions`.
        transitions: u32,
    },
    /// Another process holds it and it has not expired.
    HeldBy {
        /// The holder.
        holder: String,
        /// How long, at least, until it may be taken over.
        left: Duration,
    },
}

/// One candidate's state.
struct Elector {
    api: Api<Lease>,
    config: LeaderConfig,
    /// The version of the Lease last seen and when it was first seen, by this
    /// process's monotonic clock (client-go's `observedTime`).
    observed: Option<(String, Instant)>,
    /// The Lease as this process last wrote it, while it leads.
    held: Option<Lease>,
}

impl Elector {
    /// Try until this process holds the Lease; the instant the successful attempt
    /// started (its renewal's age counts from there), or `None` at shutdown.
    async fn acquire(&mut self, shutdown: &CancellationToken) -> Option<Instant> {
        let mut waiting_for = None::<String>;
        loop {
            let started = Instant::now();
            let attempt = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    // The attempt may have reached the server before it was cut off.
                    self.release().await;
                    return None;
                }
                attempt = tokio::time::timeout(
                    self.config.renew_deadline,
                    self.try_acquire_or_renew(),
                ) => attempt,
            };
            let (lease, identity) = (&self.config.lease, &self.config.identity);
            match attempt {
                Ok(Ok(Outcome::Held { transitions })) => {
                    tracing::info!(%lease, %identity, transitions, "became leader");
                    return Some(started);
                }
                Ok(Ok(Outcome::HeldBy { holder, left })) => {
                    if waiting_for.as_ref() != Some(&holder) {
                        tracing::info!(%lease, %identity, %holder, "standing by: the Lease is held by another process");
                        waiting_for = Some(holder);
                    } else {
                        tracing::debug!(%lease, %holder, ?left, "the Lease is still held");
                    }
                }
                Ok(Err(e)) if e.is_conflict() => {
                    tracing::debug!(%lease, "another candidate wrote the Lease first")
                }
                Ok(Err(e)) => {
                    tracing::warn!(%lease, %identity, error = %e, "could not acquire the Lease")
                }
                Err(_) => tracing::warn!(
                    %lease,
                    %identity,
                    timeout = ?self.config.renew_deadline,
                    "acquiring the Lease timed out"
                ),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(jittered(self.config.retry_period)) => {}
            }
        }
    }

    /// Renew the Lease every retry period while `running` runs, from the successful
    /// attempt that started at `renewed`, until leadership ends.
    async fn lead(
        &mut self,
        mut renewed: Instant,
        shutdown: &CancellationToken,
        running: &mut JoinHandle<()>,
    ) -> End {
        let mut next = renewed + self.config.retry_period;
        loop {
            let deadline = renewed + self.config.renew_deadline;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Shutdown,
                result = &mut *running => return End::WorkEnded(result),
                _ = tokio::time::sleep_until(next.min(deadline)) => {}
            }
            let started = Instant::now();
            if started >= deadline {
                return End::Lost(format!(
                    "no renewal succeeded for {:?}",
                    self.config.renew_deadline
                ));
            }
            let attempt = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Shutdown,
                result = &mut *running => return End::WorkEnded(result),
                attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew()) => attempt,
            };
            match attempt {
                Ok(Ok(Outcome::Held { .. })) => renewed = started,
                Ok(Ok(Outcome::HeldBy { holder, .. })) => {
                    return End::Lost(format!("the Lease names another holder, {holder:?}"))
                }
                Ok(Err(e)) => tracing::warn!(
                    lease = %self.config.lease,
                    identity = %self.config.identity,
                    error = %e,
                    "could not renew the Lease"
                ),
                Err(_) => {
                    return End::Lost(format!(
                        "no renewal succeeded for {:?} (the last attempt timed out)",
                        self.config.renew_deadline
                    ))
                }
            }
            next = Instant::now() + self.config.retry_period;
        }
    }

    /// One attempt: renew the Lease this process holds at the version it wrote (a
    /// 409 falls back to reading it), or read it and create, renew or take it over as
    /// [`decide`] says.
    async fn try_acquire_or_renew(&mut self) -> Result<Outcome, ClientError> {
        let identity = self.config.identity.clone();
        let seconds = self.config.duration_seconds();
        if let Some(held) = self.held.take() {
            let mut lease = held.clone();
            lease.spec = next_spec(
                Step::Renew,
                Some(&held.spec),
                &identity,
                seconds,
                Utc::now(),
            );
            match self.api.replace(&lease).await {
                Ok(stored) => return Ok(self.hold(stored)),
                Err(e) if e.is_conflict() => {}
                Err(e) => {
                    self.held = Some(held);
                    return Err(e);
                }
            }
        }
        let current = self.api.get_opt(&self.config.lease).await?;
        let unchanged_for = current
            .as_ref()
            .map(|l| self.observe(l))
            .unwrap_or_default();
        let spec = current.as_ref().map(|l| &l.spec);
        let step = decide(spec, &identity, unchanged_for, self.config.lease_duration);
        if let Step::Wait { left } = step {
            let holder = spec
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default();
            return Ok(Outcome::HeldBy { holder, left });
        }
        let spec = next_spec(step, spec, &identity, seconds, Utc::now());
        let stored = match current {
            None => {
                self.api
                    .create(&Lease::new(&self.config.lease, spec))
                    .await?
            }
            Some(mut lease) => {
                lease.spec = spec;
                self.api.replace(&lease).await?
            }
        };
        Ok(self.hold(stored))
    }

    /// Note `stored`, just written by this process, as held and observed.
    fn hold(&mut self, stored: Lease) -> Outcome {
        self.observe(&stored);
        let transitions = stored.spec.lease_transitions.unwrap_or_default();
        self.held = Some(stored);
        Outcome::Held { transitions }
    }

    /// How long this process has seen `lease` unchanged (zero for a version it has
    /// not seen before, which it notes as seen now).
    fn observe(&mut self, lease: &Lease) -> Duration {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let now = Instant::now();
        match &self.observed {
            Some((seen, at)) if *seen == version => now - *at,
            _ => {
                self.observed = Some((version, now));
                Duration::ZERO
            }
        }
    }

    /// Give the Lease up if this process holds it: no holder, duration 1 s, at the
    /// version read, so a standby takes it at its next retry. A conflict is read again
    /// (a renewal cut short by the shutdown may still have landed after the read).
    /// Failures are logged (the Lease then expires after its duration).
    async fn release(&mut self) {
        self.held = None;
        let (lease, identity) = (&self.config.lease, &self.config.identity);
        let attempt = async {
            let mut conflicts = 0;
            loop {
                let Some(mut current) = self.api.get_opt(lease).await? else {
                    return Ok(None);
                };
                if current.spec.holder_identity.as_deref() != Some(identity.as_str()) {
                    return Ok(None);
                }
                current.spec = released(&current.spec, Utc::now());
                match self.api.replace(&current).await {
                    Err(e) if e.is_conflict() && conflicts < 2 => conflicts += 1,
                    other => return other.map(Some),
                }
            }
        };
        match tokio::time::timeout(self.config.renew_deadline, attempt).await {
            Ok(Ok(Some(stored))) => tracing::info!(
                %lease,
                %identity,
                transitions = stored.spec.lease_transitions.unwrap_or_default(),
                "released the Lease"
            ),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(%lease, %identity, error = %e, "could not release the Lease")
            }
            Err(_) => tracing::warn!(%lease, %identity, "releasing the Lease timed out"),
        }
    }
}

/// What a candidate does with the Lease it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// There is none: create it.
    Create,
    /// It names this process: renew it (acquire time and transitions stay).
    Renew,
    /// It is released or expired: take it over (one more transition).
    TakeOver,
    /// Another process holds it: wait at least `left`.
    Wait {
        /// Until it would expire, if it stays unchanged.
        left: Duration,
    },
}

/// The step for `identity` given the Lease's `spec` (`None`: no Lease) that this
/// process has seen unchanged for `unchanged_for`. A held Lease expires after the
/// longer of `lease_duration` and the holder's own `leaseDurationSeconds`, counted from
/// when this process first saw its current version: never from its `renewTime`, which
/// another machine's clock wrote.
fn decide(
    spec: Option<&LeaseSpec>,
    identity: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> Step {
    let Some(spec) = spec else {
        return Step::Create;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Step::TakeOver,
        Some(holder) if holder == identity => Step::Renew,
        Some(_) => {
            let stated = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).into());
            let wait = lease_duration.max(stated);
            match wait.checked_sub(unchanged_for) {
                Some(left) if !left.is_zero() => Step::Wait { left },
                _ => Step::TakeOver,
            }
        }
    }
}

/// The spec `identity` writes for `step` over `current` at `now`.
fn next_spec(
    step: Step,
    current: Option<&LeaseSpec>,
    identity: &str,
    duration_seconds: u32,
    now: Time,
) -> LeaseSpec {
    let transitions = current.and_then(|c| c.lease_transitions);
    let (acquire_time, lease_transitions) = match step {
        Step::Renew => (
            current.and_then(|c| c.acquire_time).or(Some(now)),
            Some(transitions.unwrap_or(0)),
        ),
        Step::TakeOver => (Some(now), Some(transitions.unwrap_or(0) + 1)),
        Step::Create | Step::Wait { .. } => (Some(now), Some(0)),
    };
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(duration_seconds),
        acquire_time,
        renew_time: Some(now),
        lease_transitions,
    }
}

/// `current` given up at `now`: no holder, duration 1 s, the transitions kept.
fn released(current: &LeaseSpec, now: Time) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: None,
        renew_time: Some(now),
        lease_transitions: current.lease_transitions,
    }
}

/// `period` stretched by up to [`JITTER`], so candidates do not retry in step.
fn jittered(period: Duration) -> Duration {
    let unit = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    period.mul_f64(1.0 + JITTER * unit)
}

/// 64 random bits, not cryptographic: std's per-process random hash keys over the clock.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>, seconds: Option<u32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            lease_duration_seconds: seconds,
            ..Default::default()
        }
    }

    #[test]
    fn decide_between_create_renew_take_over_and_wait() {
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        let lease = secs(15);
        let (other, released, empty, mine, long) = (
            held_by(Some("b"), Some(15)),
            held_by(None, Some(1)),
            held_by(Some(""), Some(1)),
            held_by(Some("a"), Some(15)),
            held_by(Some("b"), Some(60)),
        );
        let wait = |left| Step::Wait { left };
        #[rustfmt::skip]
        let cases = [
            ("no Lease: create it", None, secs(0), Step::Create),
            ("held by another, just seen", Some(&other), secs(0), wait(secs(15))),
            ("held by another, unchanged for a while", Some(&other), secs(10), wait(secs(5))),
            ("just short of the duration", Some(&other), secs(15) - ms(1), wait(ms(1))),
            ("unchanged for the duration: expired", Some(&other), secs(15), Step::TakeOver),
            ("unchanged for longer", Some(&other), secs(40), Step::TakeOver),
            ("released (no holder): at once", Some(&released), secs(0), Step::TakeOver),
            ("released (empty holder): at once", Some(&empty), secs(0), Step::TakeOver),
            ("names this process: renew", Some(&mine), secs(0), Step::Renew),
            ("names this process, unchanged long: renew", Some(&mine), secs(100), Step::Renew),
            ("the holder's longer duration counts", Some(&long), secs(20), wait(secs(40))),
            ("the holder's longer duration, past it", Some(&long), secs(60), Step::TakeOver),
        ];
        for (name, spec, unchanged_for, want) in cases {
            assert_eq!(decide(spec, "a", unchanged_for, lease), want, "{name}");
        }
        // A shorter duration stated by the holder does not shorten the wait.
        let short = held_by(Some("b"), Some(1));
        assert_eq!(
            decide(Some(&short), "a", secs(2), lease),
            wait(secs(13)),
            "the longer of the two durations"
        );
    }

    #[test]
    fn specs_written_for_each_step() {
        let now = Utc::now();
        let then = now - chrono::Duration::hours(1);
        let current = LeaseSpec {
            holder_identity: Some("b".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(then),
            renew_time: Some(then),
            lease_transitions: Some(3),
        };
        let spec = |acquire_time, lease_transitions| LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(acquire_time),
            renew_time: Some(now),
            lease_transitions: Some(lease_transitions),
        };
        let legacy = held_by(Some("a"), Some(40));
        #[rustfmt::skip]
        let cases = [
            ("create", Step::Create, None, spec(now, 0)),
            ("renew keeps acquire time and transitions", Step::Renew, Some(&current), spec(then, 3)),
            ("renew of a Lease without them starts them", Step::Renew, Some(&legacy), spec(now, 0)),
            ("take over: one more transition", Step::TakeOver, Some(&current), spec(now, 4)),
            ("take over of a Lease without transitions", Step::TakeOver, Some(&legacy), spec(now, 1)),
        ];
        for (name, step, current, want) in cases {
            assert_eq!(next_spec(step, current, "a", 15, now), want, "{name}");
        }
        assert_eq!(
            released(&current, now),
            LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: None,
                renew_time: Some(now),
                lease_transitions: Some(3),
            }
        );
    }

    #[test]
    fn config_validation_names_the_wrong_setting() {
        let ok = LeaderConfig::new("l", "me");
        assert_eq!(ok.validate(), Ok(()));
        let with = |f: fn(&mut LeaderConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate().unwrap_err()
        };
        let cases = [
            (with(|c| c.lease.clear()), "name of a Lease"),
            (with(|c| c.identity.clear()), "an identity"),
            (
                with(|c| c.retry_period = Duration::ZERO),
                "retry period must be greater than zero",
            ),
            (
                with(|c| c.renew_deadline = c.lease_duration),
                "renew deadline (15s) must be shorter than the lease duration (15s)",
            ),
            (
                with(|c| c.retry_period = c.renew_deadline),
                "retry period (10s) must be shorter than the renew deadline (10s)",
            ),
        ];
        for (error, want) in cases {
            assert!(error.contains(want), "{error:?} should contain {want:?}");
        }
    }

    #[test]
    fn durations_and_identities() {
        let mut c = LeaderConfig::new("l", "me");
        assert_eq!(c.duration_seconds(), 15);
        c.lease_duration = Duration::from_millis(1500);
        assert_eq!(c.duration_seconds(), 2, "rounded up");
        c.lease_duration = Duration::from_millis(10);
        assert_eq!(c.duration_seconds(), 1, "at least a second");
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        assert!(a.contains('_'), "{a}");
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_millis(2400),
                "{d:?}"
            );
        }
    }
}
