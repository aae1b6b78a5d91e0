//! What the sampler thread feeds the controller: each memory reading (which may let waiters
//! in), and how the runtime runs: its lateness (which moves the live limit) and its workers
//! (what the CPU gate can admit); and, where processes share a cgroup, what the others have
//! admitted.

use std::sync::atomic::Ordering::SeqCst;

use super::{
    Controller,
    inputs::{Reading, Runtime},
    word::{QUEUED, charged_bytes, in_flight},
};
use crate::memory::{
    MemoryError,
    shared::{Departure, Others},
};

impl Controller {
    /// Called by the sampler after each refresh: a lower reading may let waiters in.
    pub(crate) fn on_sample(&self, refreshed: Result<(), MemoryError>) {
        self.gauge.health().record(&refreshed);
        let now_ms = self.clock.tick();
        self.classes.tick(now_ms);
        let state = self.state.load(SeqCst);
        self.counters.tick(state & QUEUED != 0, now_ms);
        if refreshed.is_ok() {
            self.footprint
                .observe(self.gauge.allocated_bytes(), in_flight(state));
        }
        // After a failed refresh too: the sampler's tick is what lets the progress guarantee
        // serve one request at a time when failing closed.
        if state & QUEUED != 0 {
            self.grant_waiters(Reading::Fresh);
        }
    }

    /// Called by the sampler after each sample where processes share the cgroup: what the
    /// others have admitted and not yet allocated, and how many they are.
    pub(crate) fn on_neighbours(&self, others: Others) {
        let Some(budget) = self.settings.budget else {
            return;
        };
        let state = self.state.load(SeqCst);
        let memory = self.gauge.allocated_bytes();
        let footprint = &self.footprint;
        footprint.neighbours(
            others.unseen,
            others.processes,
            budget,
            memory,
            charged_bytes(state),
        );
        if state & QUEUED != 0 {
            self.grant_waiters(Reading::Fresh);
        }
    }

    /// Keeps `departure` (which removes this process's shared record) until the pool goes.
    pub(crate) fn leave_with(&self, departure: Departure) {
        self.footprint.leave_with(departure);
    }

    /// Called by the sampler with how the runtime runs: moves the live limit (see
    /// [`limit`](super::limit)) and judges whether the CPU is saturated (see
    /// [`cpu`](super::cpu)); lets waiters in if either opened.
    pub(crate) fn on_runtime(&self, runtime: Runtime) {
        self.on_runtime_at(runtime, self.clock.now_ms());
    }

    /// [`on_runtime`](Self::on_runtime) at `now_ms` (since the pool started): tests drive it
    /// on a virtual clock.
    pub(crate) fn on_runtime_at(&self, runtime: Runtime, now_ms: u64) {
        let Runtime { lateness, workers } = runtime;
        if let Some(workers) = workers {
            self.cpu.set_workers(workers);
        }
        self.discards().refill(now_ms);
        let was_saturated = self.cpu.is_saturated();
        if let Some(judged) = self.cpu.observe(now_ms) {
            self.log_cpu(judged, was_saturated, now_ms);
        }
        let state = self.state.load(SeqCst);
        let queued = state & QUEUED != 0;
        // The reserved slots count as used: below `Critical`, waiters cannot have them.
        let used = in_flight(state) as usize + self.settings.critical_slots;
        let blocked = queued && used >= self.limit.get();
        // Lateness that request polls explain is the CPU gate's: the live limit guards
        // against work the layer cannot see. (Both judge windows on the same ticks.)
        let explained = self.cpu.explains_lateness();
        let moved = self
            .limit
            .observe(now_ms, lateness, used, blocked, explained);
        let opened =
            moved.is_some_and(|m| m.to > m.from) || (was_saturated && !self.cpu.is_saturated());
        if opened && queued {
            self.grant_waiters(Reading::Last);
        }
    }

    /// Whether the runtime is busy: it runs late, or request polls saturate the CPU. An
    /// admitted request then yields once before its handler runs, so that the worker polls
    /// for I/O first: with a CPU-bound request always ready, a worker would otherwise look at
    /// sockets (a bypassed `/health` among them) only every few dozen polls.
    pub(crate) fn runtime_is_busy(&self) -> bool {
        self.limit.is_late() || self.cpu.is_saturated()
    }
}
