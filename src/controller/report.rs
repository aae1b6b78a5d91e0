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
    Controller,
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
        let counters = &self.counters;
        counters
            .drain
            .retry_after(self.waitlist.len(), max, super::drain::draw())
    }

    /// Counts a body cut off for being too slow (its permit is about to go).
    pub(super) fn record_slow(&self, slow: TooSlow) {
        let now_ms = self.clock.last_ms();
        self.counters.slow_bodies.record(slow, now_ms);
    }

    /// Rejects admission to a request of `priority`: counted by priority too.
    pub(super) fn reject_admission(
        &self,
        priority: Priority,
        reason: Reason,
        limit: Limit,
    ) -> Rejection {
        self.counters.rejected_by[priority.rank()][reason as usize].fetch_add(1, Relaxed);
        self.reject(reason, limit)
    }

    pub(crate) fn reject(&self, reason: Reason, limit: Limit) -> Rejection {
        let (counters, now_ms) = (&self.counters, self.clock.last_ms());
        counters.count_shed(&counters.rejected, reason, limit, "request shed", now_ms);
        Rejection::new(reason, limit)
    }

    /// A waiter left at its client's deadline, before the queue timeout.
    pub(crate) fn count_client_deadline(&self) {
        self.counters.client_deadlines.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.state.load(SeqCst);
        let load = |counter: &AtomicU64| counter.load(Relaxed);
        let counters = &self.counters;
        let connections = self.connections().figures();
        Snapshot {
            in_flight: in_flight(state) as usize,
            queued: self.waitlist.len(),
            memory_bytes: self.gauge.allocated_bytes(),
            charged_bytes: charged_bytes(state),
            held_bytes: self.footprint.held(),
            shared_charges: self.footprint.is_sharing(),
            neighbours: self.footprint.neighbours_now().1,
            neighbour_bytes: self.footprint.neighbours_now().0,
            memory_budget_bytes: self.settings.budget,
            max_concurrency: self.settings.max_concurrency,
            concurrency_limit: self.adaptive.get(),
            runtime_lateness: self.adaptive.lateness(),
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
            admitted: counters.admitted.load(Relaxed),
            admitted_over_budget: counters.admitted_over_budget.load(Relaxed),
            memory_source_errors: self.gauge.health().errors(),
            memory_reading_age: self.gauge.health().age(self.clock.now_ms()),
            rejected: counters
                .rejected
                .each_ref()
                .map(|row| row.each_ref().map(load)),
            would_reject: self
                .counters
                .past
                .would_reject()
                .each_ref()
                .map(|row| row.each_ref().map(load)),
            admitted_by: counters.admitted_by.each_ref().map(load),
            rejected_by: counters
                .rejected_by
                .each_ref()
                .map(|row| row.each_ref().map(load)),
            cut_off: counters.slow_bodies.counts(),
            discards: counters.discards.counts(),
            discarded_bytes: counters.discards.bytes(),
            client_deadlines: counters.client_deadlines.load(Relaxed),
            connections: connections.open,
            max_connections: connections.max,
            accept_pauses: connections.pauses,
            idle_connections_closed: connections.closed_idle,
        }
    }
}
