//! Leader election on a `coordination.k8s.io/v1` Lease. Every replica serves
//! ADS; only the holder writes status.
//!
//! Timing rules (all derived from the lease duration `L`, see [`Timing`]):
//!
//! - Expiry is judged on each replica's own monotonic clock, never by
//!   comparing the holder's `renewTime` with the local wall clock: a
//!   candidate takes the Lease only after the record (holder, renewTime,
//!   resourceVersion) has stayed unchanged for the record's
//!   `leaseDurationSeconds` since the candidate *observed* it. Wall-clock
//!   skew between nodes therefore does not matter.
//! - The holder's right to write ends `renew_deadline` (2/3 L) after it
//!   *sent* its last successful renewal. A candidate cannot take over before
//!   L after it observed that renewal, which is later than the send. The
//!   difference (L/3) is the safety margin: it covers a status patch still
//!   in flight at the deadline and clock-rate differences.
//! - Every Lease request (one attempt = get + create/replace) is bounded by
//!   `attempt_timeout` (L/5), independent of the client's own (~295 s)
//!   timeouts. A hung renewal cannot hold up stepping down.
//! - The holder retries every `retry` (L/5), so at least two attempts fit
//!   within the renew deadline.
//! - Leadership is a deadline ([`Leadership`]), checked right before every
//!   status write and bounding each write's own timeout: a replica that was
//!   paused (SIGSTOP, a long GC-like stall, a frozen VM) past its deadline
//!   writes nothing when it resumes, even before its lease task runs again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub timing: Timing,
}

/// The lease timings, all derived from the lease duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Written to the Lease (`leaseDurationSeconds`): how long candidates
    /// wait after observing the last change before taking over.
    pub lease: Duration,
    /// How long after sending its last successful renewal the holder may
    /// still write status.
    pub renew_deadline: Duration,
    /// Time between two attempts (renewals by the holder, checks by the others).
    pub retry: Duration,
    /// Bound on one attempt (all its API requests together).
    pub attempt_timeout: Duration,
}

/// The shortest lease duration accepted (whole seconds go to the API server).
pub const MIN_LEASE: Duration = Duration::from_secs(3);

impl Timing {
    pub fn for_lease(lease: Duration) -> Timing {
        let lease = Duration::from_secs(lease.max(MIN_LEASE).as_secs());
        Timing {
            lease,
            renew_deadline: lease * 2 / 3,
            retry: lease / 5,
            attempt_timeout: lease / 5,
        }
    }

    /// The margin between the holder's last possible write and the earliest
    /// takeover by another replica.
    pub fn safety_margin(&self) -> Duration {
        self.lease.saturating_sub(self.renew_deadline)
    }
}

/// Until when this replica may write status, shared between the lease task
/// and the status writer.
#[derive(Clone, Debug, Default)]
pub struct Leadership {
    until: Arc<Mutex<Option<Instant>>>,
}

impl Leadership {
    pub fn new() -> Self {
        Self::default()
    }

    /// Time left to write status, or `None` when this replica does not lead.
    pub fn remaining(&self) -> Option<Duration> {
        self.remaining_at(Instant::now())
    }

    pub fn remaining_at(&self, now: Instant) -> Option<Duration> {
        let until = (*self.until.lock().unwrap_or_else(|p| p.into_inner()))?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    pub fn is_leader(&self) -> bool {
        self.remaining().is_some()
    }

    /// A renewal sent at `sent` succeeded: lead until `sent + renew_deadline`.
    fn renewed(&self, sent: Instant, timing: &Timing) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(sent + timing.renew_deadline);
    }

    /// Another replica holds the Lease: stop at once.
    fn revoke(&self) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn deadline(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A Lease record as a candidate saw it, and when (its own monotonic clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub holder: String,
    /// Changes on every renewal (renewTime and resourceVersion).
    pub version: String,
    /// The holder's declared `leaseDurationSeconds`.
    pub duration: Duration,
}

#[derive(Debug)]
pub struct Observed {
    record: Record,
    at: Instant,
}

/// What to do with the Lease on this attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it holding it.
    Create,
    /// Ours, or free, or expired: write ourselves as holder.
    Acquire,
    /// Another replica holds it and it has not expired.
    Wait,
}

/// Decides from the current record; `observed` remembers the last record
/// seen and when, so that expiry is judged on the local monotonic clock.
pub fn decide(
    record: Option<&Record>,
    identity: &str,
    observed: &mut Option<Observed>,
    now: Instant,
) -> Decision {
    let Some(record) = record else {
        *observed = None;
        return Decision::Create;
    };
    if record.holder.is_empty() || record.holder == identity {
        return Decision::Acquire;
    }
    match observed {
        Some(o) if o.record == *record => {
            if now.duration_since(o.at) >= record.duration {
                Decision::Acquire
            } else {
                Decision::Wait
            }
        }
        _ => {
            *observed = Some(Observed {
                record: record.clone(),
                at: now,
            });
            Decision::Wait
        }
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn record_of(lease: &Lease, default: Duration) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity.unwrap_or_default(),
        version: format!(
            "{}/{}",
            lease.metadata.resource_version.as_deref().unwrap_or(""),
            spec.renew_time.map(|t| t.0.to_string()).unwrap_or_default()
        ),
        duration: spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(default),
    }
}

/// Runs until `tx` has no receivers, keeping `leadership` and `tx` (whether
/// this replica leads) up to date.
pub async fn run(
    client: Client,
    cfg: LeaseConfig,
    leadership: Leadership,
    tx: watch::Sender<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let t = cfg.timing;
    let mut observed: Option<Observed> = None;
    loop {
        let sent = Instant::now();
        match tokio::time::timeout(t.attempt_timeout, attempt(&api, &cfg, &mut observed)).await {
            Ok(Ok(true)) => leadership.renewed(sent, &t),
            Ok(Ok(false)) => leadership.revoke(),
            Ok(Err(e)) => warn!(lease = %cfg.name, "lease update failed: {e}"),
            Err(_) => {
                warn!(lease = %cfg.name, timeout_ms = t.attempt_timeout.as_millis() as u64, "lease update timed out");
                crate::metrics::catalogue::LEASE_TIMEOUTS.inc([]);
            }
        }
        publish(&cfg, &leadership, &tx);
        if tx.is_closed() {
            return;
        }
        // Wake at the next attempt, or at the renew deadline if that comes
        // first, so that stepping down is announced at once.
        let next = sent + t.retry;
        let wake = match leadership.deadline() {
            Some(d) if d > Instant::now() && d < next => d,
            _ => next,
        };
        tokio::time::sleep_until(wake.into()).await;
        publish(&cfg, &leadership, &tx);
    }
}

fn publish(cfg: &LeaseConfig, leadership: &Leadership, tx: &watch::Sender<bool>) {
    let held = leadership.is_leader();
    if *tx.borrow() != held {
        info!(identity = %cfg.identity, leader = held, "leadership changed");
        crate::metrics::catalogue::LEADER.set([], if held { 1.0 } else { 0.0 });
        let _ = tx.send(held);
    }
}

/// One attempt: Ok(true) when this replica holds the Lease afterwards.
async fn attempt(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let secs = i32::try_from(cfg.timing.lease.as_secs()).unwrap_or(15);
    let current = api.get_opt(&cfg.name).await?;
    let record = current.as_ref().map(|l| record_of(l, cfg.timing.lease));
    match decide(record.as_ref(), &cfg.identity, observed, Instant::now()) {
        Decision::Wait => Ok(false),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Decision::Acquire => {
            let Some(mut lease) = current else {
                return Ok(false);
            };
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let mut new_spec = spec.clone();
            if holder != cfg.identity {
                new_spec.acquire_time = Some(now());
                new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                info!(identity = %cfg.identity, previous = %holder, "taking the lease");
            }
            new_spec.holder_identity = Some(cfg.identity.clone());
            new_spec.lease_duration_seconds = Some(secs);
            new_spec.renew_time = Some(now());
            lease.spec = Some(new_spec);
            // replace carries resourceVersion: a concurrent taker makes this fail with 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Gives the lease up on a clean shutdown, so that a standby replica takes
/// over at its next attempt instead of after the lease duration. Bounded
/// by `timeout`; does nothing unless this replica is the recorded holder.
pub async fn release(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
    timeout: Duration,
) {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let work = async {
        let Ok(Some(mut lease)) = api.get_opt(name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(identity) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => info!(identity, "lease released"),
            Err(e) => warn!(identity, "releasing the lease failed: {e}"),
        }
    };
    if tokio::time::timeout(timeout, work).await.is_err() {
        warn!(identity, "releasing the lease timed out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, version: &str) -> Record {
        Record {
            holder: holder.into(),
            version: version.into(),
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn timing_keeps_a_margin_and_room_for_retries() {
        for secs in [1, 3, 4, 5, 10, 15, 30, 60, 137] {
            let t = Timing::for_lease(Duration::from_secs(secs));
            assert!(t.lease >= MIN_LEASE, "{t:?}");
            assert_eq!(
                t.lease.subsec_nanos(),
                0,
                "whole seconds go to the API server"
            );
            // The holder stops writing strictly before anyone may take over,
            // with a margin longer than one bounded request.
            assert!(t.renew_deadline < t.lease, "{t:?}");
            assert!(t.safety_margin() >= t.attempt_timeout, "{t:?}");
            assert!(t.safety_margin() >= t.lease / 4, "{t:?}");
            // A failed or timed-out attempt still leaves time for another
            // before the deadline: one slow request never loses the lease.
            assert!(t.retry + t.attempt_timeout < t.renew_deadline, "{t:?}");
            assert!(
                2 * (t.retry + t.attempt_timeout) <= t.renew_deadline + t.retry,
                "{t:?}"
            );
        }
        let t = Timing::for_lease(Duration::from_secs(15));
        assert_eq!(
            (t.renew_deadline, t.retry, t.attempt_timeout),
            (
                Duration::from_secs(10),
                Duration::from_secs(3),
                Duration::from_secs(3)
            )
        );
    }

    #[test]
    fn leadership_is_a_deadline_from_the_send_time() {
        let t = Timing::for_lease(Duration::from_secs(15));
        let l = Leadership::new();
        assert!(!l.is_leader());
        let sent = Instant::now();
        l.renewed(sent, &t);
        assert!(l.remaining_at(sent).is_some_and(|d| d == t.renew_deadline));
        assert!(l
            .remaining_at(sent + t.renew_deadline - Duration::from_millis(1))
            .is_some());
        // A replica resumed after a pause (SIGSTOP) past the deadline: no
        // leadership left, whether or not its lease task ran since.
        assert_eq!(l.remaining_at(sent + t.renew_deadline), None);
        assert_eq!(l.remaining_at(sent + t.lease), None);
        // A renewal whose answer arrives late counts from when it was sent.
        let late = sent + Duration::from_secs(9);
        l.renewed(sent, &t);
        assert_eq!(l.remaining_at(late), Some(Duration::from_secs(1)));
        l.revoke();
        assert!(!l.is_leader());
        // Clones share the deadline (the writer holds one).
        let c = l.clone();
        l.renewed(Instant::now(), &t);
        assert!(c.is_leader());
    }

    #[test]
    fn expiry_is_judged_on_the_local_clock_since_the_last_change() {
        let t0 = Instant::now();
        let mut seen = None;
        let s = Duration::from_secs;
        // No Lease: create it. Free or ours: take/renew at once.
        assert_eq!(decide(None, "b", &mut seen, t0), Decision::Create);
        assert_eq!(
            decide(Some(&rec("", "1")), "b", &mut seen, t0),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&rec("b", "1")), "b", &mut seen, t0),
            Decision::Acquire
        );
        // Held by a: wait a full duration after first seeing this record,
        // however old its renewTime claims to be (skewed clocks).
        assert_eq!(
            decide(Some(&rec("a", "1")), "b", &mut seen, t0),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&rec("a", "1")), "b", &mut seen, t0 + s(14)),
            Decision::Wait
        );
        // a renews: the wait starts over from this observation.
        assert_eq!(
            decide(Some(&rec("a", "2")), "b", &mut seen, t0 + s(14)),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&rec("a", "2")), "b", &mut seen, t0 + s(28)),
            Decision::Wait
        );
        // Unchanged for the lease duration: expired.
        assert_eq!(
            decide(Some(&rec("a", "2")), "b", &mut seen, t0 + s(29)),
            Decision::Acquire
        );
        // The holder's declared duration counts, not ours.
        let mut seen = None;
        let long = Record {
            duration: s(60),
            ..rec("a", "9")
        };
        assert_eq!(decide(Some(&long), "b", &mut seen, t0), Decision::Wait);
        assert_eq!(
            decide(Some(&long), "b", &mut seen, t0 + s(59)),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&long), "b", &mut seen, t0 + s(60)),
            Decision::Acquire
        );
    }

    /// The holder's last possible write comes before any takeover, by the
    /// margin, whatever the request latencies.
    #[test]
    fn holder_stops_before_a_candidate_may_take_over() {
        for secs in [3, 4, 15, 60] {
            let t = Timing::for_lease(Duration::from_secs(secs));
            let l = Leadership::new();
            let t0 = Instant::now();
            for latency_ms in [0u64, 10, 500, 2_000] {
                let latency = Duration::from_millis(latency_ms).min(t.attempt_timeout);
                // Renewal sent at t0, committed (and seen by b) `latency` later.
                l.renewed(t0, &t);
                let mut seen = None;
                let committed = t0 + latency;
                let r = Record {
                    duration: t.lease,
                    ..rec("a", "r")
                };
                assert_eq!(decide(Some(&r), "b", &mut seen, committed), Decision::Wait);
                // b's earliest takeover.
                let mut take = committed;
                while decide(Some(&r), "b", &mut seen, take) == Decision::Wait {
                    take += Duration::from_millis(50);
                }
                let last_write = t0 + l.remaining_at(t0).expect("leads");
                assert!(
                    last_write + t.safety_margin() <= take,
                    "lease {secs}s latency {latency:?}"
                );
                assert_eq!(l.remaining_at(take), None);
            }
        }
    }
}
