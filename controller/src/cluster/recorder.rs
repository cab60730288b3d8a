//! The Event task: Events are created off the reconcile pass, so that routing never waits
//! for bookkeeping. A pass hands its Events over a bounded queue ([`EventQueue::offer`],
//! never blocking: a full queue drops and counts); this task creates them one by one, only
//! while this replica leads, like client-go's event recorder: an Event identical to the
//! last one on the same object within [`Limits::dedup_window`] is skipped, each object
//! has a token bucket (burst 25, one more every 5 minutes), and all Events together are
//! paced by a global bucket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::{ClusterError, ErrorKind};
use super::events::{self, EventReason, EventSpec};
use super::lease::Leadership;
use super::metrics::{EventResult, Metrics};
use super::retry::{leader_call, Backoff};

/// How many Events, how often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Events waiting for the task at most; more are dropped.
    pub queue: usize,
    /// Events one object may get at once ...
    pub per_object_burst: u32,
    /// ... and one more every this long (client-go: 25, 5 min).
    pub per_object_refill: Duration,
    /// Events in a row before the global pace applies ...
    pub global_burst: u32,
    /// ... and then one every this long.
    pub global_refill: Duration,
    /// An Event identical to the last one on its object within this window is skipped.
    pub dedup_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue: 4096,
            per_object_burst: 25,
            per_object_refill: Duration::from_secs(300),
            global_burst: 100,
            global_refill: Duration::from_millis(20),
            dedup_window: Duration::from_secs(600),
        }
    }
}

/// Rounding of refills that add up to a whole token.
const EPSILON: f64 = 1e-9;

/// A token bucket on a clock given as the time since some start (so tests use a fake one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    updated: Duration,
}

impl Bucket {
    pub fn full(burst: u32, now: Duration) -> Self {
        Bucket {
            tokens: f64::from(burst),
            updated: now,
        }
    }

    fn refill(&mut self, burst: u32, every: Duration, now: Duration) {
        let elapsed = now.saturating_sub(self.updated);
        let earned = if every.is_zero() {
            f64::from(burst)
        } else {
            elapsed.as_secs_f64() / every.as_secs_f64()
        };
        self.tokens = (self.tokens + earned).min(f64::from(burst));
        self.updated = self.updated.max(now);
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, burst: u32, every: Duration, now: Duration) -> bool {
        self.refill(burst, every, now);
        if self.tokens + EPSILON >= 1.0 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// How long until a token is there (zero: take it now).
    pub fn wait(&mut self, burst: u32, every: Duration, now: Duration) -> Duration {
        self.refill(burst, every, now);
        if self.tokens + EPSILON >= 1.0 {
            Duration::ZERO
        } else {
            every.mul_f64((1.0 - self.tokens).max(0.0))
        }
    }

    fn is_full(&self, burst: u32) -> bool {
        self.tokens + EPSILON >= f64::from(burst)
    }
}

/// What becomes of one Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// The same as the last Event on its object, within the window.
    Duplicate,
    /// Its object had too many Events lately.
    RateLimited,
}

type ObjectId = (String, String, String);

/// The pure part of the task: which Events go out (per-object rate and deduplication).
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    objects: HashMap<ObjectId, Bucket>,
    last: HashMap<ObjectId, (EventReason, String, Duration)>,
    admitted: u64,
}

impl Gate {
    pub fn new(limits: Limits) -> Self {
        Gate {
            limits,
            objects: HashMap::new(),
            last: HashMap::new(),
            admitted: 0,
        }
    }

    pub fn admit(&mut self, spec: &EventSpec, now: Duration) -> Verdict {
        let limits = self.limits;
        self.admitted += 1;
        if self.admitted.is_multiple_of(1024) {
            self.forget(now);
        }
        let regarding = &spec.regarding;
        let id = (
            regarding.kind.clone().unwrap_or_default(),
            regarding.namespace.clone().unwrap_or_default(),
            regarding.name.clone().unwrap_or_default(),
        );
        if let Some((reason, note, at)) = self.last.get(&id) {
            if *reason == spec.reason
                && *note == spec.note
                && now.saturating_sub(*at) < limits.dedup_window
            {
                return Verdict::Duplicate;
            }
        }
        let bucket = self
            .objects
            .entry(id.clone())
            .or_insert_with(|| Bucket::full(limits.per_object_burst, now));
        if !bucket.take(limits.per_object_burst, limits.per_object_refill, now) {
            return Verdict::RateLimited;
        }
        self.last.insert(id, (spec.reason, spec.note.clone(), now));
        Verdict::Send
    }

    /// Drops what no longer limits anything: full buckets, Events older than the window.
    fn forget(&mut self, now: Duration) {
        let limits = self.limits;
        self.objects.retain(|_, bucket| {
            bucket.refill(limits.per_object_burst, limits.per_object_refill, now);
            !bucket.is_full(limits.per_object_burst)
        });
        self.last
            .retain(|_, (_, _, at)| now.saturating_sub(*at) < limits.dedup_window);
    }

    /// Objects remembered (for tests: memory stays bounded).
    pub fn remembered(&self) -> usize {
        self.objects.len().max(self.last.len())
    }
}

/// The handle a reconcile pass queues Events on. Cheap to clone.
#[derive(Clone)]
pub struct EventQueue {
    sender: mpsc::Sender<EventSpec>,
    queued: Arc<AtomicU64>,
    handled: watch::Receiver<u64>,
    metrics: Metrics,
}

impl EventQueue {
    /// Queues `spec` without waiting; false (and counted) when the queue is full.
    pub fn offer(&self, spec: EventSpec) -> bool {
        match self.sender.try_send(spec) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::SeqCst);
                true
            }
            Err(_) => {
                self.metrics.event(EventResult::QueueFull);
                false
            }
        }
    }

    /// Resolves once every Event queued so far was handled (created, skipped or failed).
    pub async fn idle(&self) {
        let target = self.queued.load(Ordering::SeqCst);
        let mut handled = self.handled.clone();
        let _ = handled.wait_for(|done| *done >= target).await;
    }
}

/// Starts the Event task; it ends when every [`EventQueue`] is dropped.
pub fn spawn(
    client: Client,
    leadership: Leadership,
    metrics: Metrics,
    identity: String,
    limits: Limits,
) -> (EventQueue, JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::channel::<EventSpec>(limits.queue.max(1));
    let (done, handled) = watch::channel(0u64);
    let queue = EventQueue {
        sender,
        queued: Arc::new(AtomicU64::new(0)),
        handled,
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut gate = Gate::new(limits);
        let mut global = Bucket::full(limits.global_burst, Duration::ZERO);
        let backoff = Backoff {
            attempts: 3,
            ..Backoff::default()
        };
        while let Some(spec) = receiver.recv().await {
            let result = if !leadership.is_leading() {
                EventResult::NotLeader
            } else {
                match gate.admit(&spec, start.elapsed()) {
                    Verdict::Duplicate => EventResult::Duplicate,
                    Verdict::RateLimited => EventResult::RateLimited,
                    Verdict::Send => {
                        let wait =
                            global.wait(limits.global_burst, limits.global_refill, start.elapsed());
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        global.take(limits.global_burst, limits.global_refill, start.elapsed());
                        create(&client, &leadership, &metrics, &identity, &spec, backoff).await
                    }
                }
            };
            metrics.event(result);
            done.send_modify(|n| *n += 1);
        }
    });
    (queue, task)
}

async fn create(
    client: &Client,
    leadership: &Leadership,
    metrics: &Metrics,
    identity: &str,
    spec: &EventSpec,
    backoff: Backoff,
) -> EventResult {
    let wall = Timestamp::now();
    let result = leader_call("create event", leadership, backoff, || {
        events::publish(client, spec, identity, wall)
    })
    .await;
    match result {
        Ok(()) => EventResult::Created,
        Err(ClusterError::NotLeader) => EventResult::NotLeader,
        Err(error) => {
            tracing::warn!(%error, reason = spec.reason.as_str(), "could not create an Event");
            metrics.error(ErrorKind::Event);
            EventResult::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::events::{reference, IsvcUids};
    use modelsplit_core::resources::ObjectKind;

    fn spec(name: &str, reason: EventReason, note: &str) -> EventSpec {
        EventSpec::new(
            reference(ObjectKind::InferenceService, "apps", name, &IsvcUids::new()),
            reason,
            note.to_string(),
        )
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_same_event_on_the_same_object_within_the_window_goes_out_once() {
        let mut gate = Gate::new(Limits::default());
        let ready = spec("a", EventReason::GroupReady, "g: valid: a=50% b=50%");
        assert_eq!(gate.admit(&ready, secs(0)), Verdict::Send);
        assert_eq!(gate.admit(&ready, secs(60)), Verdict::Duplicate);
        // Another object, another reason or another note is news.
        let other = spec("b", EventReason::GroupReady, "g: valid: a=50% b=50%");
        assert_eq!(gate.admit(&other, secs(60)), Verdict::Send);
        let moved = spec("a", EventReason::GroupReady, "g: valid: a=70% b=30%");
        assert_eq!(gate.admit(&moved, secs(61)), Verdict::Send);
        // Back to the first split: not the last Event on the object, so it goes out.
        assert_eq!(gate.admit(&ready, secs(62)), Verdict::Send);
        // After the window the same Event goes out again.
        assert_eq!(gate.admit(&ready, secs(62 + 600)), Verdict::Send);
    }

    #[test]
    fn an_object_gets_25_events_at_once_then_one_every_five_minutes() {
        let mut gate = Gate::new(Limits::default());
        for n in 0..25 {
            let event = spec("a", EventReason::GroupReady, &format!("split {n}"));
            assert_eq!(gate.admit(&event, secs(0)), Verdict::Send, "{n}");
        }
        let event = spec("a", EventReason::GroupReady, "split 25");
        assert_eq!(gate.admit(&event, secs(1)), Verdict::RateLimited);
        // Other objects are not limited by it.
        let other = spec("b", EventReason::GroupReady, "split 25");
        assert_eq!(gate.admit(&other, secs(1)), Verdict::Send);
        assert_eq!(gate.admit(&event, secs(299)), Verdict::RateLimited);
        assert_eq!(gate.admit(&event, secs(300)), Verdict::Send);
        let next = spec("a", EventReason::GroupReady, "split 26");
        assert_eq!(gate.admit(&next, secs(301)), Verdict::RateLimited);
        assert_eq!(gate.admit(&next, secs(600)), Verdict::Send);
    }

    #[test]
    fn memory_is_bounded_by_the_objects_limited_lately() {
        let mut gate = Gate::new(Limits::default());
        for n in 0..5000 {
            let event = spec(&format!("isvc-{n}"), EventReason::GroupReady, "ready");
            assert_eq!(gate.admit(&event, secs(0)), Verdict::Send);
        }
        // An hour later, the next admissions forget everything older than the window.
        for n in 0..2048 {
            let event = spec(&format!("late-{n}"), EventReason::GroupReady, "ready");
            gate.admit(&event, secs(3600));
        }
        assert!(gate.remembered() <= 2048, "{}", gate.remembered());
    }

    #[test]
    fn the_global_bucket_paces_after_its_burst() {
        let every = Duration::from_millis(20);
        let mut bucket = Bucket::full(2, secs(0));
        assert!(bucket.take(2, every, secs(0)));
        assert!(bucket.take(2, every, secs(0)));
        assert_eq!(bucket.wait(2, every, secs(0)), every);
        assert!(!bucket.take(2, every, secs(0)));
        let later = Duration::from_millis(10);
        assert_eq!(bucket.wait(2, every, later), Duration::from_millis(10));
        assert!(bucket.take(2, every, Duration::from_millis(20)));
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Metrics::new();
        let (sender, _receiver) = mpsc::channel(2);
        let (_done, handled) = watch::channel(0u64);
        let queue = EventQueue {
            sender,
            queued: Arc::new(AtomicU64::new(0)),
            handled,
            metrics: metrics.clone(),
        };
        let event = spec("a", EventReason::GroupReady, "ready");
        assert!(queue.offer(event.clone()));
        assert!(queue.offer(event.clone()));
        assert!(!queue.offer(event));
        let text = metrics.render();
        assert!(
            text.lines()
                .any(|l| l == "modelsplit_events_total{result=\"queue_full\"} 1"),
            "{text}"
        );
    }
}
