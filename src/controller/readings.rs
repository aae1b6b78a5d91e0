//! What the sampler thread feeds the controller: each memory reading (which may let waiters
//! in) and the runtime's lateness (which moves the live limit).

use std::{
    sync::atomic::Ordering::{Relaxed, SeqCst},
    time::Duration,
};

use super::{
    Controller,
    fit::Reading,
    word::{QUEUED, in_flight},
};
use crate::memory::MemoryError;

impl Controller {
    /// Called by the sampler after each refresh: a lower reading may let waiters in.
    pub(crate) fn on_sample(&self, refreshed: Result<(), MemoryError>) {
        self.reading_health.record(&refreshed);
        let now_ms = self.started.elapsed().as_millis() as u64;
        self.clock_ms.store(now_ms, Relaxed);
        self.classes.tick(now_ms);
        let state = self.state.load(SeqCst);
        let refused = self
            .rejected
            .iter()
            .flatten()
            .map(|n| n.load(Relaxed))
            .sum();
        let (admitted, queued) = (self.admitted.load(Relaxed), state & QUEUED != 0);
        self.drain.update(admitted, refused, queued, now_ms);
        if refreshed.is_ok() {
            self.footprint
                .observe(self.memory.allocated_bytes(), in_flight(state));
        }
        // After a failed refresh too: the sampler's tick is what lets the progress guarantee
        // serve one request at a time when failing closed.
        if state & QUEUED != 0 {
            self.grant_waiters(Reading::Fresh);
        }
    }

    /// Called by the sampler with the runtime's lateness: moves the live limit (see
    /// [`limit`]), and lets waiters in if it rose.
    pub(crate) fn on_lateness(&self, lateness: Duration) {
        self.on_lateness_at(lateness, self.started.elapsed().as_millis() as u64);
    }

    /// [`on_lateness`](Self::on_lateness) at `now_ms` (since the pool started): tests drive
    /// it on a virtual clock.
    pub(crate) fn on_lateness_at(&self, lateness: Duration, now_ms: u64) {
        self.lateness_us.store(lateness.as_micros() as u64, Relaxed);
        let state = self.state.load(SeqCst);
        let queued = state & QUEUED != 0;
        // The reserved slots count as used: below `Critical`, waiters cannot have them.
        let used = in_flight(state) as usize + self.settings.critical_slots;
        let blocked = queued && used >= self.limit.get();
        let Some(moved) = self.limit.observe(now_ms, lateness, used, blocked) else {
            return;
        };
        self.log_limit(moved, lateness, now_ms);
        if moved.to > moved.from && queued {
            self.grant_waiters(Reading::Last);
        }
    }

    /// Whether an admitted request should yield once before its handler runs, so that the
    /// runtime polls for I/O first: while the runtime runs late.
    pub(crate) fn runtime_is_late(&self) -> bool {
        self.limit.is_late()
    }
}
