//! Why the layer answered a request itself: [`Reason`], [`Limit`] and [`Rejection`]; and how
//! discarding a rejected request's body ended (see [`discard`](crate::discard)), counted:
//! [`Discard`] and [`Discards`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a request was not admitted; with [`Limit`], the labels of `admission_rejected_total`.
///
/// ```
/// use tower_admission::{Limit, Reason};
///
/// let labels: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
/// assert_eq!(labels, ["queue_full", "queue_timeout", "too_large", "standing_queue"]);
/// assert_eq!(Limit::Memory.as_str(), "memory");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The queue was full when the request arrived.
    QueueFull,
    /// The request waited for the whole queue timeout.
    QueueTimeout,
    /// The request declared a `Content-Length` above the whole memory budget.
    TooLarge,
    /// The request would have waited, or had waited, longer than twice the queue target for
    /// a CPU that cannot keep up: by default, twice its service time (see
    /// [`AdmissionConfig::queue_target`](crate::AdmissionConfig::queue_target)).
    StandingQueue,
}

impl Reason {
    /// The label used in metrics and response bodies: `queue_full`, `queue_timeout`,
    /// `too_large` or `standing_queue`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::QueueFull => "queue_full",
            Reason::QueueTimeout => "queue_timeout",
            Reason::TooLarge => "too_large",
            Reason::StandingQueue => "standing_queue",
        }
    }

    /// Every reason, for iterating over counters.
    pub const ALL: [Reason; 4] = [
        Reason::QueueFull,
        Reason::QueueTimeout,
        Reason::TooLarge,
        Reason::StandingQueue,
    ];
}

/// The limit that held a request back (see [`Reason`] for an example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Requests in flight.
    Concurrency,
    /// The memory budget.
    Memory,
    /// The live concurrency limit, while it is below `max_concurrency` (see
    /// [`AdmissionConfig::adaptive_limit`](crate::AdmissionConfig::adaptive_limit)).
    Adaptive,
    /// The estimate of a request whose cost is not known yet: it would fit in the memory
    /// budget, but requests of unknown cost go one at a time, and another was in flight.
    Estimate,
    /// The CPU: the workers are saturated, and the CPU work already admitted is what they can
    /// finish soon (see
    /// [`AdmissionConfig::adaptive_limit`](crate::AdmissionConfig::adaptive_limit)).
    Cpu,
}

impl Limit {
    /// The label used in metrics and response bodies: `concurrency`, `memory`, `adaptive`,
    /// `estimate` or `cpu`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::Concurrency => "concurrency",
            Limit::Memory => "memory",
            Limit::Adaptive => "adaptive",
            Limit::Estimate => "estimate",
            Limit::Cpu => "cpu",
        }
    }

    /// Every limit, for iterating over counters.
    pub const ALL: [Limit; 5] = [
        Limit::Concurrency,
        Limit::Memory,
        Limit::Adaptive,
        Limit::Estimate,
        Limit::Cpu,
    ];
}

/// A request the layer answered itself, with why. [`AdmissionBody::rejection`] returns it, so
/// outer layers can tell the layer's 503s from the service's own.
///
/// ```
/// use tower_admission::AdmissionBody;
///
/// fn describe<B>(response: &http::Response<AdmissionBody<B>>) -> Option<String> {
///     let rejection = response.body().rejection()?;
///     Some(format!("{} ({})", rejection.reason().as_str(), rejection.limit().as_str()))
/// }
/// ```
///
/// [`AdmissionBody::rejection`]: crate::AdmissionBody::rejection
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rejection {
    reason: Reason,
    limit: Limit,
}

impl Rejection {
    pub(crate) const fn new(reason: Reason, limit: Limit) -> Self {
        Self { reason, limit }
    }

    /// Why the request was rejected.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// Which limit was hit.
    pub fn limit(&self) -> Limit {
        self.limit
    }
}

/// How the layer dealt with the unread body of a request it rejected; the label of
/// `admission_discards_total`.
///
/// ```
/// use tower_admission::Discard;
///
/// let labels: Vec<_> = Discard::ALL.iter().map(|d| d.as_str()).collect();
/// assert_eq!(
///     labels,
///     ["whole", "limit", "timeout", "too_slow", "gone", "skipped", "no_room", "busy"]
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Discard {
    /// Read to its end and dropped: the client read the answer, and the connection serves on.
    Whole,
    /// Longer than the discard limit: answered with `Connection: close` once the limit was
    /// read.
    Limit,
    /// Still coming at the discard timeout: answered with `Connection: close`.
    Timeout,
    /// Sent slower than the minimum request body rate: answered with `Connection: close`.
    TooSlow,
    /// The client went away, or the body failed.
    Gone,
    /// Not read at all, the answer sent at once with `Connection: close`: declared longer than
    /// the limit, discarding off, or the client waiting for `100 Continue`.
    Skipped,
    /// Not read at all, the answer sent at once with `Connection: close`: no room for the
    /// connection's buffers in the memory budget, or in the share of it that discards may
    /// hold together (an eighth).
    NoRoom,
    /// Not read at all, the answer sent at once with `Connection: close`: discards have
    /// already read their allowance, as much as admitted requests' bodies brought in lately
    /// and 64 MiB a second, so that reading rejected bodies never takes the CPU that admitted
    /// work needs.
    Busy,
}

impl Discard {
    /// The label used in metrics: `whole`, `limit`, `timeout`, `too_slow`, `gone`, `skipped`,
    /// `no_room` or `busy`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Discard::Whole => "whole",
            Discard::Limit => "limit",
            Discard::Timeout => "timeout",
            Discard::TooSlow => "too_slow",
            Discard::Gone => "gone",
            Discard::Skipped => "skipped",
            Discard::NoRoom => "no_room",
            Discard::Busy => "busy",
        }
    }

    /// Every outcome, for iterating over counters.
    pub const ALL: [Discard; 8] = [
        Discard::Whole,
        Discard::Limit,
        Discard::Timeout,
        Discard::TooSlow,
        Discard::Gone,
        Discard::Skipped,
        Discard::NoRoom,
        Discard::Busy,
    ];

    /// Whether the connection must close after the answer: the body was not all read.
    pub(crate) fn closes(self) -> bool {
        self != Discard::Whole
    }
}

/// The most discards may read on credit: what admitted bodies brought in lately and what
/// time refilled, at most this much; time refills this much a second.
const ALLOWANCE_MAX: u64 = 64 << 20;

/// Discards counted by outcome, and the bytes they dropped; and what discards may read.
#[derive(Debug)]
pub(crate) struct Discards {
    ended: [AtomicU64; Discard::ALL.len()],
    bytes: AtomicU64,
    /// Bytes discards may read: credited by the bodies of admitted requests and by time,
    /// spent by discards.
    allowance: AtomicU64,
    /// When time last refilled the allowance, in the pool's milliseconds.
    refilled_ms: AtomicU64,
}

impl Default for Discards {
    fn default() -> Self {
        Self {
            ended: Default::default(),
            bytes: AtomicU64::new(0),
            allowance: AtomicU64::new(ALLOWANCE_MAX),
            refilled_ms: AtomicU64::new(0),
        }
    }
}

impl Discards {
    /// An admitted request declared a body of `bytes`.
    #[inline]
    pub(crate) fn credit(&self, bytes: u64) {
        if self.allowance.load(Relaxed) < ALLOWANCE_MAX {
            let _ = self.allowance.fetch_update(Relaxed, Relaxed, |allowance| {
                Some(allowance.saturating_add(bytes).min(ALLOWANCE_MAX))
            });
        }
    }

    /// Refills the allowance for the time since the last refill, `now_ms` on the pool's
    /// clock. Only the sampler thread refills.
    pub(crate) fn refill(&self, now_ms: u64) {
        let since = self.refilled_ms.swap(now_ms, Relaxed);
        let elapsed_ms = now_ms.saturating_sub(since).min(1_000);
        self.credit(ALLOWANCE_MAX * elapsed_ms / 1_000);
    }

    /// Spends `bytes` of the allowance, if it has them: reading rejected bodies costs the CPU
    /// that admitted work needs (hyper reads them on the same workers), and under a storm of
    /// rejections would take all of it, so discards read no more than admitted bodies brought
    /// in, and a little more as time passes.
    pub(crate) fn spend(&self, bytes: u64) -> bool {
        self.allowance
            .fetch_update(Relaxed, Relaxed, |allowance| allowance.checked_sub(bytes))
            .is_ok()
    }

    pub(crate) fn record(&self, outcome: Discard, bytes: u64) {
        self.ended[outcome as usize].fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    /// The counts, by [`Discard::ALL`] order.
    pub(crate) fn counts(&self) -> [u64; Discard::ALL.len()] {
        self.ended.each_ref().map(|count| count.load(Relaxed))
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discards_read_on_credit_of_admitted_bodies_at_most_a_cap() {
        let discards = Discards::default();
        assert!(discards.spend(ALLOWANCE_MAX), "a full allowance at first");
        assert!(
            !discards.spend(1),
            "then nothing until admitted bodies bring some in"
        );
        discards.credit(3 << 20);
        assert!(discards.spend(2 << 20));
        assert!(!discards.spend(2 << 20), "1 MiB left");
        discards.credit(u64::MAX);
        assert!(
            discards.spend(ALLOWANCE_MAX) && !discards.spend(1),
            "capped"
        );
    }

    #[test]
    fn time_refills_the_allowance_by_a_little_a_second() {
        let discards = Discards::default();
        discards.refill(1_000);
        assert!(discards.spend(ALLOWANCE_MAX) && !discards.spend(1));
        discards.refill(1_250);
        assert!(discards.spend(ALLOWANCE_MAX / 4) && !discards.spend(1 << 10));
        discards.refill(60_000);
        assert!(
            discards.spend(ALLOWANCE_MAX) && !discards.spend(1),
            "capped"
        );
    }
}
