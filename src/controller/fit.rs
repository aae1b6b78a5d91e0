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

/// How a request stands against every limit at once, in one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fit {
    /// The slot limit that holds it back, if the slots are taken.
    pub(super) slots: Option<Limit>,
    /// The CPU gate holds it back.
    pub(super) cpu: bool,
    pub(super) memory: Room,
    /// Its class has shown its cost.
    pub(super) known: bool,
}

/// Where a request stands in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Room {
    /// Below the soft limit (or no budget).
    Soft,
    /// Above the soft limit, or over the budget on its charge but not on the least it will
    /// cost: it may go while every admitted request's cost is known (one at a time).
    Probe,
    /// Over this process's share of the headroom, or over the budget even on the least it
    /// will cost.
    Over,
}

/// Whether a request may go: at once, one at a time, or not for a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Goes {
    Fits,
    Unsure,
    Blocked(Limit),
}

impl Goes {
    /// The limit that keeps a request that goes so from going at once with someone waiting
    /// ahead of it: the one that binds, or memory (only memory can make a request that would
    /// fit by itself wait behind another).
    pub(super) fn blame_queued(self) -> Limit {
        match self {
            Goes::Blocked(limit) => limit,
            Goes::Fits | Goes::Unsure => Limit::Memory,
        }
    }
}

impl Fit {
    /// Whether it may go; where several limits hold it back, the slots answer first, then
    /// the CPU, then memory.
    #[inline]
    pub(super) fn goes(self) -> Goes {
        match self {
            Self {
                slots: Some(limit), ..
            } => Goes::Blocked(limit),
            Self { cpu: true, .. } => Goes::Blocked(Limit::Cpu),
            Self {
                memory: Room::Over, ..
            } => Goes::Blocked(Limit::Memory),
            Self {
                memory: Room::Soft,
                known: true,
                ..
            } => Goes::Fits,
            _ => Goes::Unsure,
        }
    }

    /// The limit that keeps it from going at once, `queued` someone waiting ahead. When it
    /// would fit were its cost known, only its estimate holds it back (requests of unknown
    /// cost go one at a time); when it would fit by itself, a waiter ahead of it holds it
    /// back, and only memory can do that.
    #[inline]
    pub(super) fn blame(self, queued: bool) -> Limit {
        match self.goes() {
            Goes::Unsure if !queued && self.memory == Room::Soft => Limit::Estimate,
            goes => goes.blame_queued(),
        }
    }

    /// Whether only the CPU gate holds it back: were its work not counted, it would go
    /// (memory, a slot and the estimate rule allowing).
    pub(super) fn cpu_alone(self) -> bool {
        self.cpu && self.slots.is_none() && self.memory != Room::Over
    }

    /// Whether memory stands above the soft limit for it, whatever else holds it back.
    pub(super) fn above_soft(self) -> bool {
        self.memory != Room::Soft
    }
}

impl Controller {
    /// Whether, under the lock, a request that `goes` so in `state` may be admitted, and if
    /// so whether over the budget (the progress guarantee, for the `head` on a fresh
    /// reading).
    pub(super) fn may_admit_locked(
        &self,
        goes: Goes,
        state: u64,
        head: bool,
        reading: Reading,
    ) -> Option<bool> {
        match goes {
            Goes::Fits => Some(false),
            Goes::Unsure if self.unsettled.load(SeqCst) == 0 => Some(false),
            Goes::Blocked(Limit::Memory)
                if head && in_flight(state) == 0 && reading == Reading::Fresh =>
            {
                Some(true)
            }
            _ => None,
        }
    }

    /// How `ask` stands in `state`.
    ///
    /// Below the soft limit (the budget less the largest unknown part of a charge seen
    /// lately) it fits. Above it, or over the budget on its estimate, it is unsure as long as
    /// the least it will cost (its `Content-Length` and the least its class cost lately)
    /// stays within the budget: such requests go one at a time (see `may_admit_locked`), so
    /// a wrong estimate overshoots by one request at most. A request whose class always
    /// costs the same is not unsure: it waits until its charge fits.
    ///
    /// While the CPU is saturated, a request whose work does not fit what the workers can
    /// finish soon is held back by the CPU gate (see [`cpu`](super::cpu)).
    ///
    /// Requests below `Critical` count the reserved slots and bytes as taken.
    #[inline]
    pub(super) fn fit(&self, state: u64, memory: u64, ask: Ask) -> Fit {
        let in_flight = in_flight(state);
        Fit {
            slots: self.slots_taken(in_flight, ask.priority),
            cpu: self.cpu_holds_back(in_flight, ask),
            memory: self.room(state, memory, ask),
            known: ask.known,
        }
    }

    /// How `ask` goes in `state`: [`fit`](Self::fit)'s answer, looking no further than the
    /// first limit that binds (the fast path, and a rejection, look at one limit only).
    #[inline]
    pub(super) fn goes(&self, state: u64, memory: u64, ask: Ask) -> Goes {
        let in_flight = in_flight(state);
        if let Some(limit) = self.slots_taken(in_flight, ask.priority) {
            return Goes::Blocked(limit);
        }
        if self.cpu_holds_back(in_flight, ask) {
            return Goes::Blocked(Limit::Cpu);
        }
        let memory = self.room(state, memory, ask);
        Fit {
            slots: None,
            cpu: false,
            memory,
            known: ask.known,
        }
        .goes()
    }

    /// The slot limit that holds a request of `priority` back with `in_flight` requests in
    /// flight, if the slots are taken. Requests below `Critical` count the reserved slots as
    /// taken, and at least one slot stays for them, however low the live limit.
    #[inline]
    fn slots_taken(&self, in_flight: u64, priority: Priority) -> Option<Limit> {
        let live = self.adaptive.get();
        let slots = match priority {
            Priority::Critical => live,
            _ => live - self.settings.critical_slots.min(live - 1),
        };
        (in_flight >= slots as u64).then(|| match live < self.adaptive.ceiling() {
            true => Limit::Adaptive,
            false => Limit::Concurrency,
        })
    }

    #[inline]
    fn cpu_holds_back(&self, in_flight: u64, ask: Ask) -> bool {
        self.cpu
            .holds_back(ask.cpu_us, ask.body_us, ask.long, in_flight)
    }

    /// Where `ask` stands in memory in `state` (below `Critical`, the reserved bytes count as
    /// taken).
    #[inline(always)]
    fn room(&self, state: u64, memory: u64, ask: Ask) -> Room {
        let Some(budget) = self.settings.budget else {
            return Room::Soft;
        };
        let critical_bytes = match ask.priority {
            Priority::Critical => 0,
            _ => self.settings.critical_bytes,
        };
        // Processes sharing a cgroup take their share of the headroom between samples.
        if !self.footprint.within_share(ask.charge) {
            return Room::Over;
        }
        let budget = budget - critical_bytes;
        let spoken_for = self.footprint.spoken_for(memory, charged_bytes(state));
        let soft = budget.saturating_sub(self.classes.largest());
        let within =
            |bytes: u64, limit: u64| !self.memory_rejects(spoken_for.saturating_add(bytes) > limit);
        if within(ask.charge, soft) {
            Room::Soft
        } else if within(ask.charge, budget) || within(ask.least, budget - budget / PROBE_MARGIN) {
            Room::Probe
        } else {
            Room::Over
        }
    }

    /// Whether `ask`, held back, would fit in memory were it not for `passing` bytes charged
    /// to the requests that went ahead of a blocked head (see [`queue`](super::queue)).
    pub(super) fn fits_but_for(&self, state: u64, memory: u64, ask: Ask, passing: u64) -> bool {
        let passing_kib = kib(passing).min(charged_bytes(state) / 1024);
        let without = state - charge(passing_kib);
        !matches!(
            self.goes(without, memory.saturating_sub(passing), ask),
            Goes::Blocked(_)
        )
    }

    /// The limit that keeps `ask`, a waiter, from going in `state`: with others waiting (the
    /// queue holds it), the first limit that binds tells (see [`Goes::blame_queued`]).
    pub(super) fn blame_waiter(&self, state: u64, memory: u64, ask: Ask) -> Limit {
        debug_assert!(state & QUEUED != 0, "a waiter is in the queue");
        self.goes(state, memory, ask).blame_queued()
    }

    /// Whether the memory limit rejects, given whether the reading puts the request `over`
    /// the limit. An untrusted reading decides nothing: the policy does. Failing open costs
    /// nothing until the reading says over; failing closed checks the reading's age on
    /// every decision.
    #[inline]
    pub(super) fn memory_rejects(&self, over: bool) -> bool {
        let fails_closed = self.settings.memory_failure == MemoryFailure::Closed;
        // Failing open and under, or failing closed and over: the policy agrees with the
        // reading, whatever its health.
        if over == fails_closed {
            return over;
        }
        self.trusted_reading_rejects(over)
    }

    /// The reading rejects (`over`) or admits, unless it cannot be trusted. Out of line:
    /// it reads the clock, and keeps the admission loop small.
    #[cold]
    #[inline(never)]
    fn trusted_reading_rejects(&self, over: bool) -> bool {
        if self.gauge.health().is_trusted(self.clock.now_ms()) {
            over
        } else {
            self.settings.memory_failure == MemoryFailure::Closed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_ROOMS: [Room; 3] = [Room::Soft, Room::Probe, Room::Over];

    fn fit(slots: Option<Limit>, cpu: bool, memory: Room, known: bool) -> Fit {
        Fit {
            slots,
            cpu,
            memory,
            known,
        }
    }

    #[test]
    fn the_slots_answer_first_then_the_cpu_then_memory() {
        for memory in ALL_ROOMS {
            for cpu in [false, true] {
                let full = fit(Some(Limit::Adaptive), cpu, memory, true);
                assert_eq!(full.goes(), Goes::Blocked(Limit::Adaptive));
                assert_eq!(full.blame(false), Limit::Adaptive);
            }
            let cpu = fit(None, true, memory, true);
            assert_eq!(cpu.goes(), Goes::Blocked(Limit::Cpu));
            assert_eq!(cpu.cpu_alone(), memory != Room::Over);
        }
        let over = fit(None, false, Room::Over, true);
        assert_eq!(over.goes(), Goes::Blocked(Limit::Memory));
        assert!(over.above_soft() && !over.cpu_alone());
    }

    #[test]
    fn below_the_soft_limit_only_an_unknown_class_goes_one_at_a_time() {
        // (room, known) -> how it goes, what holds it back alone and behind a waiter.
        let table = [
            (Room::Soft, true, Goes::Fits, Limit::Memory, Limit::Memory),
            (
                Room::Soft,
                false,
                Goes::Unsure,
                Limit::Estimate,
                Limit::Memory,
            ),
            (
                Room::Probe,
                true,
                Goes::Unsure,
                Limit::Memory,
                Limit::Memory,
            ),
            (
                Room::Probe,
                false,
                Goes::Unsure,
                Limit::Memory,
                Limit::Memory,
            ),
        ];
        for (memory, known, goes, alone, queued) in table {
            let f = fit(None, false, memory, known);
            assert_eq!(f.goes(), goes, "{f:?}");
            assert_eq!(f.blame(false), alone, "{f:?}");
            assert_eq!(f.blame(true), queued, "{f:?}");
            assert_eq!(f.above_soft(), memory != Room::Soft);
            assert!(!f.cpu_alone());
        }
    }

    #[test]
    fn above_the_soft_limit_whatever_else_holds_it_back() {
        let full = fit(Some(Limit::Concurrency), true, Room::Probe, true);
        assert!(full.above_soft());
        assert!(!fit(Some(Limit::Concurrency), false, Room::Soft, false).above_soft());
    }
}
