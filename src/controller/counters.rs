//! What the pool counts of its decisions: admissions and rejections (by priority too), with
//! throttled logs; slow and discarded bodies; the drain rate `Retry-After` comes from; and,
//! observing only, the rejections not made.

use std::{
    sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    time::Duration,
};

use super::drain::Drain;
use crate::{
    data_rate::SlowBodies,
    log_throttle::LogThrottle,
    priority::Priority,
    rejection::Discards,
    rejection::{Limit, Reason},
};

/// Shed counts, by reason and limit.
pub(super) type ShedCounts = [[AtomicU64; Limit::ALL.len()]; Reason::ALL.len()];

/// What the pool counts of its decisions, and logs (throttled): admissions and rejections (by
/// priority too), admissions over the budget, slow bodies, discarded bodies, and the drain
/// rate that `Retry-After` is computed from.
#[derive(Debug)]
pub(super) struct Counters {
    pub(super) admitted: AtomicU64,
    pub(super) admitted_over_budget: AtomicU64,
    pub(super) rejected: ShedCounts,
    pub(super) admitted_by: [AtomicU64; 3],
    pub(super) rejected_by: [[AtomicU64; Reason::ALL.len()]; 3],
    shed_log: LogThrottle,
    over_budget_log: LogThrottle,
    pub(super) slow_bodies: SlowBodies,
    pub(super) discards: Discards,
    pub(super) drain: Drain,
    /// Waiters that left at their client's deadline, before the queue timeout.
    pub(super) client_deadlines: AtomicU64,
    /// Observe only: see [`observe_only`](super::observe_only).
    pub(super) past: PastLimits,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            admitted: AtomicU64::new(0),
            admitted_over_budget: AtomicU64::new(0),
            rejected: Default::default(),
            admitted_by: Default::default(),
            rejected_by: Default::default(),
            shed_log: LogThrottle::new(Duration::from_secs(1)),
            over_budget_log: LogThrottle::new(Duration::from_secs(1)),
            slow_bodies: SlowBodies::default(),
            discards: Discards::default(),
            drain: Drain::default(),
            client_deadlines: AtomicU64::new(0),
            past: PastLimits::default(),
        }
    }
}

impl Counters {
    /// Counts a shed in `counts` (the sheds, or those that observing only did not make), and
    /// logs it as `what`, throttled.
    pub(super) fn count_shed(
        &self,
        counts: &ShedCounts,
        reason: Reason,
        limit: Limit,
        what: &str,
        now_ms: u64,
    ) {
        let total = counts[reason as usize][limit as usize].fetch_add(1, Relaxed) + 1;
        // At 100k rejections/s a line per rejection would be its own outage.
        if let Some(suppressed) = self.shed_log.allow(now_ms, total) {
            tracing::warn!(
                reason = reason.as_str(),
                limit = limit.as_str(),
                total,
                suppressed,
                "{what}"
            );
        }
    }

    /// Feeds the drain rate the sampler's tick: what was admitted and rejected so far.
    pub(super) fn tick(&self, queued: bool, now_ms: u64) {
        let rejected = self
            .rejected
            .iter()
            .flatten()
            .map(|n| n.load(Relaxed))
            .sum();
        self.drain
            .update(self.admitted.load(Relaxed), rejected, queued, now_ms);
    }

    /// Counts an admission of `priority`.
    pub(super) fn admitted(&self, priority: Priority) {
        self.admitted.fetch_add(1, Relaxed);
        self.admitted_by[priority.rank()].fetch_add(1, Relaxed);
    }

    pub(super) fn note_over_budget(&self, memory: u64, budget: Option<u64>, now_ms: u64) {
        let total = self.admitted_over_budget.fetch_add(1, Relaxed) + 1;
        if let Some(suppressed) = self.over_budget_log.allow(now_ms, total) {
            tracing::warn!(
                memory,
                budget,
                total,
                suppressed,
                "nothing in flight: admitting one request over the memory budget"
            );
        }
    }
}

/// What observing only keeps: the rejections it did not make, and how many requests are in
/// flight past the limits (each stands for the waiter it would have been).
#[derive(Debug, Default)]
pub(super) struct PastLimits {
    would_reject: ShedCounts,
    pub(super) in_flight: AtomicUsize,
}

impl PastLimits {
    /// The rejections observing only did not make.
    pub(super) fn would_reject(&self) -> &ShedCounts {
        &self.would_reject
    }
}
