//! What the pool counts and tells: admissions, rejections and slow bodies (with throttled
//! logs), and the snapshot of its live figures.

use std::{
    sync::atomic::{
        AtomicU64,
        Ordering::{Relaxed, SeqCst},
    },
    time::Duration,
};

use super::{
    Ask, Controller,
    cpu::Judged,
    limit::Moved,
    word::{charged_bytes, in_flight},
};
use crate::{
    data_rate::TooSlow,
    priority::Priority,
    rejection::{Limit, Reason, Rejection},
    snapshot::{ClassCost, Snapshot},
};

impl Controller {
    /// Whole seconds a request shed now should wait (see [`drain`](super::drain)), at most
    /// `max`.
    pub(crate) fn retry_after_secs(&self, max: u32) -> u32 {
        self.drain
            .retry_after(self.queued.load(Relaxed), max, super::drain::draw())
    }

    /// Counts the admission of `ask`, and charges the CPU work it brings.
    pub(super) fn count_admission(&self, ask: Ask, over_budget: bool, memory: u64) {
        let priority = ask.priority;
        self.cpu.recharge(0, ask.cpu_us);
        self.unsettled.fetch_add(1, SeqCst);
        self.admitted.fetch_add(1, Relaxed);
        self.admitted_by[priority.rank()].fetch_add(1, Relaxed);
        if over_budget {
            self.note_over_budget(memory);
        }
    }

    /// Counts a body cut off for being too slow (its permit is about to go).
    pub(super) fn record_slow(&self, slow: TooSlow) {
        self.slow_bodies.record(slow, self.clock_ms.load(Relaxed));
    }

    /// Refuses admission to a request of `priority`: counted by priority too.
    pub(super) fn reject_admission(
        &self,
        priority: Priority,
        reason: Reason,
        limit: Limit,
    ) -> Rejection {
        self.rejected_by[priority.rank()][reason as usize].fetch_add(1, Relaxed);
        self.reject(reason, limit)
    }

    pub(crate) fn reject(&self, reason: Reason, limit: Limit) -> Rejection {
        self.count_shed(&self.rejected, reason, limit, "request shed");
        Rejection::new(reason, limit)
    }

    /// Counts a shed in `counts` (the sheds, or those that observing only did not make), and
    /// logs it as `what`, throttled.
    pub(super) fn count_shed(
        &self,
        counts: &[[AtomicU64; Limit::ALL.len()]; Reason::ALL.len()],
        reason: Reason,
        limit: Limit,
        what: &str,
    ) {
        let total = counts[reason as usize][limit as usize].fetch_add(1, Relaxed) + 1;
        // At 100k rejections/s a line per rejection would be its own outage.
        if let Some(suppressed) = self.shed_log.allow(self.clock_ms.load(Relaxed), total) {
            tracing::warn!(
                reason = reason.as_str(),
                limit = limit.as_str(),
                total,
                suppressed,
                "{what}"
            );
        }
    }

    /// Logs a move of the live limit to half or twice what was last logged: every fall, and
    /// a rise at most once a second.
    pub(super) fn log_limit(&self, moved: Moved, lateness: Duration, now_ms: u64) {
        let Moved { from, to, why } = moved;
        let lateness_ms = lateness.as_secs_f64() * 1e3;
        tracing::debug!(
            from,
            to,
            lateness_ms,
            why = why.as_str(),
            "live limit moved"
        );
        let logged = self.limit_logged.load(Relaxed);
        if to > logged / 2 && to < logged.saturating_mul(2) {
            return;
        }
        // Every large fall is told (falls come at most once a window); rises once a second.
        let fell = to <= logged / 2;
        if fell || self.limit_log.allow(now_ms, 1).is_some() {
            self.limit_logged.store(to, Relaxed);
            tracing::info!(
                from,
                to,
                lateness_ms,
                why = why.as_str(),
                ceiling = self.limit.ceiling(),
                "live concurrency limit moved"
            );
        }
    }

    /// Logs a window the CPU gate judged: at debug level each one, at info level when the
    /// CPU becomes saturated or stops being so (at most once a second).
    pub(super) fn log_cpu(&self, judged: Judged, was_saturated: bool, now_ms: u64) {
        let Judged {
            busy_workers,
            saturated,
        } = judged;
        let (charged_us, capacity_us) = (self.cpu.charged_us(), self.cpu.capacity_us());
        tracing::debug!(
            busy_workers,
            saturated,
            charged_us,
            capacity_us,
            "cpu window"
        );
        if saturated != was_saturated && self.cpu.log.allow(now_ms, 1).is_some() {
            tracing::info!(
                busy_workers,
                workers = self.cpu.workers(),
                typical_us = self.cpu.typical_us(),
                capacity_us,
                "{}",
                if saturated {
                    "cpu saturated: admitting only the work the workers can finish soon"
                } else {
                    "cpu no longer saturated: the cpu gate is open"
                }
            );
        }
    }

    fn note_over_budget(&self, memory: u64) {
        let total = self.admitted_over_budget.fetch_add(1, Relaxed) + 1;
        if let Some(suppressed) = self
            .over_budget_log
            .allow(self.clock_ms.load(Relaxed), total)
        {
            tracing::warn!(
                memory,
                budget = self.settings.budget,
                total,
                suppressed,
                "nothing in flight: admitting one request over the memory budget"
            );
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.state.load(SeqCst);
        let load = |counter: &AtomicU64| counter.load(Relaxed);
        Snapshot {
            in_flight: in_flight(state) as usize,
            queued: self.queued.load(Relaxed),
            memory_bytes: self.memory.allocated_bytes(),
            charged_bytes: charged_bytes(state),
            held_bytes: self.footprint.held(),
            memory_budget_bytes: self.settings.budget,
            max_concurrency: self.settings.max_concurrency,
            concurrency_limit: self.limit.get(),
            runtime_lateness: Duration::from_micros(self.lateness_us.load(Relaxed)),
            cpu_saturated: self.cpu.is_saturated(),
            cpu_workers: self.cpu.workers(),
            cpu_charged: Duration::from_micros(self.cpu.charged_us()),
            cpu_capacity: Duration::from_micros(self.cpu.capacity_us()),
            classes: self
                .classes
                .figures()
                .into_iter()
                .map(|figures| ClassCost {
                    name: figures.name,
                    cpu: figures.cpu_ns.map(Duration::from_nanos),
                    peak_bytes: figures.peak_bytes,
                })
                .collect(),
            queue_capacity: self.settings.queue_capacity,
            observe_only: self.settings.observe_only,
            admitted: self.admitted.load(Relaxed),
            admitted_over_budget: self.admitted_over_budget.load(Relaxed),
            memory_source_errors: self.reading_health.errors(),
            memory_reading_age: self.reading_health.age(),
            rejected: self.rejected.each_ref().map(|row| row.each_ref().map(load)),
            would_reject: self
                .would_reject
                .each_ref()
                .map(|row| row.each_ref().map(load)),
            admitted_by: self.admitted_by.each_ref().map(load),
            rejected_by: self
                .rejected_by
                .each_ref()
                .map(|row| row.each_ref().map(load)),
            cut_off: self.slow_bodies.counts(),
            discards: self.discards.counts(),
            discarded_bytes: self.discards.bytes(),
        }
    }
}
