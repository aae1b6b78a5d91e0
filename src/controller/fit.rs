//! How a request stands against the limits: it fits, it may go one at a time, or a limit
//! holds it back; and whether the memory limit may decide with the reading it has.

use std::sync::atomic::Ordering::SeqCst;

use super::{
    Controller,
    inputs::{Ask, Reading},
    word::{QUEUED, charge, charged_bytes, in_flight, kib},
};
use crate::{memory::MemoryFailure, priority::Priority, rejection::Limit};

/// A request whose estimate does not fit goes on the least it will cost only while that
/// leaves this fraction (1/64) of the budget free: room for what no request is charged for,
/// such as connection buffers, so that the overshoot stays within one request.
pub(super) const PROBE_MARGIN: u64 = 64;

/// How a request of some charge stands against the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fit {
    Fits,
    /// Above the soft limit, or over the budget on its estimate but not on what is known of
    /// it: it may go while every admitted request's cost is known (one at a time).
    Unsure,
    Blocked(Limit),
}

impl Controller {
    /// Whether, under the lock, `ask` may be admitted in `state`, and if so whether over the
    /// budget (the progress guarantee, for the head on a fresh reading).
    pub(super) fn may_admit_locked(
        &self,
        state: u64,
        memory: u64,
        ask: Ask,
        head: bool,
        reading: Reading,
    ) -> Option<bool> {
        match self.fit(state, memory, ask) {
            Fit::Fits => Some(false),
            Fit::Unsure if self.unsettled.load(SeqCst) == 0 => Some(false),
            Fit::Blocked(Limit::Memory)
                if head && in_flight(state) == 0 && reading == Reading::Fresh =>
            {
                Some(true)
            }
            _ => None,
        }
    }

    /// How `ask` stands in `state`.
    ///
    /// Below the soft limit (the budget less the largest unknown part of a charge seen lately)
    /// it fits. Above
    /// it, or over the budget on its estimate, it is unsure as long as the least it will cost
    /// (its `Content-Length` and the least its class cost lately) stays within the budget:
    /// such requests go one at a time (see `may_admit_locked`), so a wrong estimate
    /// overshoots by one request at most. A request whose class always costs the same is not
    /// unsure: it waits until its charge fits.
    ///
    /// While the CPU is saturated, a request whose work does not fit what the workers can
    /// finish soon is held back by the CPU gate (see [`cpu`](super::cpu)).
    ///
    /// Requests below `Critical` count the reserved slots and bytes as taken.
    pub(super) fn fit(&self, state: u64, memory: u64, ask: Ask) -> Fit {
        let settings = &self.settings;
        let live = self.limit.get();
        let (slots, critical_bytes) = match ask.priority {
            Priority::Critical => (live, 0),
            // At least one slot stays for the others, however low the live limit.
            _ => (
                live - settings.critical_slots.min(live - 1),
                settings.critical_bytes,
            ),
        };
        if in_flight(state) >= slots as u64 {
            return Fit::Blocked(if live < self.limit.ceiling() {
                Limit::Adaptive
            } else {
                Limit::Concurrency
            });
        }
        if self
            .cpu
            .holds_back(ask.cpu_us, ask.body_us, ask.long, in_flight(state))
        {
            return Fit::Blocked(Limit::Cpu);
        }
        let Some(budget) = settings.budget else {
            return Fit::Fits;
        };
        // Processes sharing a cgroup take their share of the headroom between samples.
        if !self.footprint.within_share(ask.charge) {
            return Fit::Blocked(Limit::Memory);
        }
        let budget = budget - critical_bytes;
        let spoken_for = self.footprint.spoken_for(memory, charged_bytes(state));
        let soft = budget.saturating_sub(self.classes.largest());
        let within =
            |bytes: u64, limit: u64| !self.memory_refuses(spoken_for.saturating_add(bytes) > limit);
        if within(ask.charge, soft) {
            if ask.known { Fit::Fits } else { Fit::Unsure }
        } else if within(ask.charge, budget) || within(ask.least, budget - budget / PROBE_MARGIN) {
            Fit::Unsure
        } else {
            Fit::Blocked(Limit::Memory)
        }
    }

    /// Whether `ask`, held back, would fit in memory were it not for `passing` bytes charged
    /// to the requests that went ahead of a blocked head (see [`queue`](super::queue)).
    pub(super) fn fits_but_for(&self, state: u64, memory: u64, ask: Ask, passing: u64) -> bool {
        let passing_kib = kib(passing).min(charged_bytes(state) / 1024);
        let without = state - charge(passing_kib);
        !matches!(
            self.fit(without, memory.saturating_sub(passing), ask),
            Fit::Blocked(_)
        )
    }

    /// The limit that keeps a request from going at once. When it would fit were its cost
    /// known, only its estimate holds it back (requests of unknown cost go one at a time);
    /// when it would fit by itself, a waiter ahead of it holds it back, and only memory can
    /// do that.
    pub(super) fn blame(&self, state: u64, memory: u64, ask: Ask) -> Limit {
        match self.fit(state, memory, ask) {
            Fit::Blocked(limit) => limit,
            Fit::Unsure
                if state & QUEUED == 0
                    && self.fit(state, memory, Ask { known: true, ..ask }) == Fit::Fits =>
            {
                Limit::Estimate
            }
            Fit::Fits | Fit::Unsure => Limit::Memory,
        }
    }

    /// Whether the memory limit refuses, given whether the reading puts the request `over`
    /// the limit. An untrusted reading decides nothing: the policy does. Failing open costs
    /// nothing until the reading says over; failing closed checks the reading's age on
    /// every decision.
    #[inline]
    pub(super) fn memory_refuses(&self, over: bool) -> bool {
        let fails_closed = self.settings.memory_failure == MemoryFailure::Closed;
        // Failing open and under, or failing closed and over: the policy agrees with the
        // reading, whatever its health.
        if over == fails_closed {
            return over;
        }
        self.trusted_reading_refuses(over)
    }

    /// The reading refuses (`over`) or admits, unless it cannot be trusted. Out of line:
    /// it reads the clock, and keeps the admission loop small.
    #[cold]
    #[inline(never)]
    fn trusted_reading_refuses(&self, over: bool) -> bool {
        if self.reading_health.is_trusted() {
            over
        } else {
            self.settings.memory_failure == MemoryFailure::Closed
        }
    }
}
