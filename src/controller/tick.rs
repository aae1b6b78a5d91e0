//! The sampler's one entrance: each tick brings the memory source's refresh, how the runtime
//! runs (its lateness moves the live limit, its workers size the CPU gate) and, where
//! processes share a cgroup, what the others have admitted. A tick reads the clock once,
//! closes the window both the CPU gate and the live limit judge, and grants waiters at most
//! once, after everything it brought is in.

use std::sync::{PoisonError, atomic::Ordering::SeqCst};

use super::{
    Controller,
    inputs::{Reading, Runtime},
    word::{QUEUED, charged_bytes, in_flight},
};
use crate::memory::{
    MemoryError,
    shared::{Departure, Others},
};

/// What the sampler brings on one tick.
#[derive(Debug)]
pub(crate) struct Tick {
    /// How the memory source's refresh went.
    pub(crate) refreshed: Result<(), MemoryError>,
    /// How the runtime runs, where a heartbeat measures it.
    pub(crate) runtime: Option<Runtime>,
    /// What the cgroup's other processes have admitted, where processes share it.
    pub(crate) others: Option<Others>,
}

impl Tick {
    /// A tick that brings a refresh alone.
    #[cfg(test)]
    pub(crate) fn refreshed(refreshed: Result<(), MemoryError>) -> Self {
        Self {
            refreshed,
            runtime: None,
            others: None,
        }
    }
}

impl Controller {
    /// Takes in what the sampler brings: a lower reading, a live limit that rose or a CPU no
    /// longer saturated may let waiters in. Waiters are granted on the fresh reading after a
    /// failed refresh too: the sampler's tick is what lets the progress guarantee serve one
    /// request at a time when failing closed.
    pub(crate) fn tick(&self, tick: Tick) {
        let now_ms = self.clock.tick();
        let Tick {
            refreshed,
            runtime,
            others,
        } = tick;
        self.gauge.health().record(&refreshed, now_ms);
        self.classes.tick(now_ms);
        let state = self.state.load(SeqCst);
        self.counters.tick(state & QUEUED != 0, now_ms);
        if refreshed.is_ok() {
            self.footprint
                .observe(self.gauge.allocated_bytes(), in_flight(state));
        }
        if let Some(others) = others {
            self.neighbours(others, state);
        }
        if let Some(runtime) = runtime {
            self.judge_runtime(runtime, now_ms);
        }
        self.sample_connections(now_ms);
        if self.state.load(SeqCst) & QUEUED != 0 {
            self.grant_waiters(Reading::Fresh);
        }
    }

    /// What the cgroup's other processes have admitted and not yet allocated, and how many
    /// they are.
    fn neighbours(&self, others: Others, state: u64) {
        let Some(budget) = self.settings.budget else {
            return;
        };
        let memory = self.gauge.allocated_bytes();
        let footprint = &self.footprint;
        footprint.neighbours(
            others.unseen,
            others.processes,
            budget,
            memory,
            charged_bytes(state),
        );
    }

    /// Keeps `departure` (which removes this process's shared record) until the pool goes.
    pub(crate) fn leave_with(&self, departure: Departure) {
        self.footprint.leave_with(departure);
    }

    /// How the runtime runs at `now_ms`: a reading of the window that the CPU gate (see
    /// [`cpu`](super::cpu)) and then the live limit (see [`adaptive`](super::adaptive))
    /// judge once it closes.
    fn judge_runtime(&self, runtime: Runtime, now_ms: u64) {
        let Runtime { lateness, workers } = runtime;
        if let Some(workers) = workers {
            self.cpu.set_workers(workers);
        }
        self.discards().refill(now_ms);
        self.adaptive.note(lateness);
        // The gate is on where the limit adapts: both judge the window, or neither does.
        if !self.adaptive.is_adaptive() {
            return;
        }
        let state = self.state.load(SeqCst);
        // The reserved slots count as used: below `Critical`, waiters cannot have them.
        let used = in_flight(state) as usize + self.settings.critical_slots;
        let blocked = state & QUEUED != 0 && used >= self.adaptive.get();
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(closed) = window.read(now_ms, lateness, used, blocked) else {
            return;
        };
        drop(window);
        let was_saturated = self.cpu.is_saturated();
        let judged = self.cpu.judge(&closed);
        self.cpu.log(judged, was_saturated, now_ms);
        // Lateness that request polls explain is the CPU gate's: the live limit guards
        // against work the layer cannot see.
        let explained = self.cpu.explains_lateness();
        self.adaptive.judge(&closed, explained, now_ms);
    }

    /// Whether the runtime is busy: it runs late, or request polls saturate the CPU. An
    /// admitted request then yields once before its handler runs, so that the worker polls
    /// for I/O first: with a CPU-bound request always ready, a worker would otherwise look at
    /// sockets (a bypassed `/health` among them) only every few dozen polls.
    pub(crate) fn runtime_is_busy(&self) -> bool {
        self.adaptive.is_late() || self.cpu.is_saturated()
    }
}
